process ALIGN {
    tag "${meta.id}"
    label params.align_backend == 'builtin' ? 'process_gpu_optional' : 'process_gpu'
    container "${params.align_backend == 'aretomo3' ? params.aretomo3_image : (params.align_backend == 'aretomo2' ? params.aretomo2_image : params.tiltflow_image)}"

    input:
    tuple val(meta), path(series, stageAs: 'stack/*')

    output:
    tuple val(meta), path("align/${meta.id}"), emit: series
    path "versions.yml", emit: versions

    script:
    def args = task.ext.args ?: ''
    def extra = args ? "--extra-args '${args}'" : ''
    def axis = params.tilt_axis != null ? "--tilt-axis ${params.tilt_axis}" : ''
    """
    tiltflow align stack/${meta.id}/${meta.id}.star --outdir align --backend ${params.align_backend} \\
        --thickness ${params.thickness} --dark-tol ${params.dark_tol} ${axis} --device ${params.device} ${extra}
    tiltflow version --yaml "${task.process}" > versions.yml
    """

    stub:
    """
    mkdir -p align/${meta.id}
    touch align/${meta.id}/${meta.id}.star align/${meta.id}/${meta.id}.aln
    echo '"${task.process}": {tiltflow: stub}' > versions.yml
    """
}
