process GAIN {
    tag "${gain.name}"
    label 'process_single'
    container "${params.tiltflow_image}"

    input:
    path gain, stageAs: 'raw/*'

    output:
    path "gain", emit: gain
    path "versions.yml", emit: versions

    script:
    def args = task.ext.args ?: ''
    def rf = params.gain_serialem_rf != null ? "--serialem-rf ${params.gain_serialem_rf}" : "--rotate ${params.gain_rotate} --flip ${params.gain_flip}"
    """
    tiltflow gain ${gain} --outdir gain ${rf} ${args}
    tiltflow version --yaml "${task.process}" > versions.yml
    """

    stub:
    """
    mkdir -p gain
    touch gain/gain.mrc gain/console.log gain/error.log
    echo '"${task.process}": {tiltflow: stub}' > versions.yml
    """
}
