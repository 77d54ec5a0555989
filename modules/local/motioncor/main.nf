process MOTIONCOR {
    tag "${meta.id}"
    label params.motioncor_backend == 'builtin' ? 'process_gpu_optional' : 'process_gpu'
    container "${params.motioncor_backend == 'builtin' ? params.tiltflow_image : params.motioncor_image}"

    input:
    tuple val(meta), path(series, stageAs: 'import/*')
    path frames, stageAs: 'frames'
    path gain, stageAs: 'gain/*'

    output:
    tuple val(meta), path("motioncor/${meta.id}"), emit: series
    path "versions.yml", emit: versions

    script:
    def args = task.ext.args ?: ''
    def gain_opt = gain ? "--gain ${gain}" : ''
    def patches = params.mc_patches ? "--patches ${params.mc_patches}" : ''
    def extra = args ? "--extra-args '${args}'" : ''
    """
    tiltflow motioncor import/${meta.id}/${meta.id}.star --outdir motioncor --frames frames ${gain_opt} \\
        --backend ${params.motioncor_backend} --throw ${params.mc_throw} --trunc ${params.mc_trunc} \\
        --bin ${params.mc_bin} ${patches} ${params.even_odd ? '--even-odd' : '--no-even-odd'} \\
        --device ${params.device} ${extra}
    tiltflow version --yaml "${task.process}" > versions.yml
    """

    stub:
    """
    mkdir -p motioncor/${meta.id}
    touch motioncor/${meta.id}/${meta.id}.star
    echo '"${task.process}": {tiltflow: stub}' > versions.yml
    """
}
