process REPORT {
    label 'process_single'
    container "${params.tiltflow_image}"

    input:
    path motioncor, stageAs: 'motioncor/*'
    path ctf, stageAs: 'ctf/*'
    path exclude, stageAs: 'exclude/*'
    path stack, stageAs: 'stack/*'
    path align, stageAs: 'align/*'
    path reconstruct, stageAs: 'reconstruct/*'
    path relion, stageAs: 'relion'

    output:
    path "report", emit: report
    path "versions.yml", emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    tiltflow report . --output report/report.html ${args}
    tiltflow version --yaml "${task.process}" > versions.yml
    """

    stub:
    """
    mkdir -p report
    touch report/report.html
    echo '"${task.process}": {tiltflow: stub}' > versions.yml
    """
}
