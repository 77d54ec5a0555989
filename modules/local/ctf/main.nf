process CTF {
    tag "${meta.id}"
    label 'process_medium'
    container "${params.ctf_backend == 'builtin' ? params.tiltflow_image : params.ctffind_image}"

    input:
    tuple val(meta), path(series, stageAs: 'motioncor/*')

    output:
    tuple val(meta), path("ctf/${meta.id}"), emit: series
    path "versions.yml", emit: versions

    script:
    def args = task.ext.args ?: ''
    def extra = args ? "--extra-args '${args}'" : ''
    """
    tiltflow ctf motioncor/${meta.id}/${meta.id}.star --outdir ctf --backend ${params.ctf_backend} \\
        --res-min ${params.ctf_res_min} --res-max ${params.ctf_res_max} --defocus-range ${params.ctf_defocus_range} \\
        --device ${params.device} ${extra}
    tiltflow version --yaml "${task.process}" > versions.yml
    """

    stub:
    """
    mkdir -p ctf/${meta.id}
    touch ctf/${meta.id}/${meta.id}.star
    echo '"${task.process}": {tiltflow: stub}' > versions.yml
    """
}
