process RECONSTRUCT {
    tag "${meta.id}"
    label 'process_gpu_optional'
    container "${params.tiltflow_image}"

    input:
    tuple val(meta), path(series, stageAs: 'align/*'), path(stack, stageAs: 'stack/*')

    output:
    tuple val(meta), path("reconstruct/${meta.id}"), emit: series
    path "versions.yml", emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    tiltflow reconstruct align/${meta.id}/${meta.id}.star --outdir reconstruct \\
        --pixel-size ${params.rec_pixel_size} --thickness ${params.thickness} --method ${params.rec_method} \\
        ${params.even_odd ? '--halves' : '--no-halves'} --device ${params.device} \\
        --ctf-correction ${params.rec_ctf_correction} ${params.rec_dose_weighting ? '--dose-weighting' : '--no-dose-weighting'} ${args}
    tiltflow version --yaml "${task.process}" > versions.yml
    """

    stub:
    """
    mkdir -p reconstruct/${meta.id}
    touch reconstruct/${meta.id}/${meta.id}.star reconstruct/${meta.id}/rec_${meta.id}.mrc
    echo '"${task.process}": {tiltflow: stub}' > versions.yml
    """
}
