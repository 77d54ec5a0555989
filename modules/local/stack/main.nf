process STACK {
    tag "${meta.id}"
    label 'process_single'
    container "${params.stack_backend == 'imod' ? params.imod_image : params.tiltflow_image}"

    input:
    tuple val(meta), path(series, stageAs: 'exclude/*'), path(micrographs, stageAs: 'motioncor/*')

    output:
    tuple val(meta), path("stack/${meta.id}"), emit: series
    path "versions.yml", emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    tiltflow stack exclude/${meta.id}/${meta.id}.star --outdir stack --backend ${params.stack_backend} \\
        --bin ${params.stack_bin} ${args}
    tiltflow version --yaml "${task.process}" > versions.yml
    """

    stub:
    """
    mkdir -p stack/${meta.id}
    touch stack/${meta.id}/${meta.id}.star stack/${meta.id}/${meta.id}.mrc
    echo '"${task.process}": {tiltflow: stub}' > versions.yml
    """
}
