// CTF estimation of one tilt series (RELION CtfFind): `tiltflow ctf` (options from conf/modules.config ext.args; see meta.yml)
process CTF {
    tag "${meta.id}"
    label 'process_gpu_optional'

    input:
    tuple val(meta), path(series, stageAs: 'motioncor/*')

    output:
    tuple val(meta), path("ctf/${meta.id}"), emit: series
    path "versions.yml", emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def backend = task.ext.backend ?: 'builtin'
    def args2 = task.ext.args2 ? "--extra-args '${task.ext.args2}'" : ''
    def memory_env = task.memory ? "TILTFLOW_MEMORY_GB=${task.memory.toMega() / 1024}" : ''  // tiltflow.memory
    """
    # tiltflow ${workflow.manifest.version}: a new release changes every task hash (bin/ alone is hashed)
    export TILTFLOW_THREADS=${task.cpus} OMP_NUM_THREADS=${task.cpus} ${memory_env}
    tiltflow ctf motioncor/${meta.id}/${meta.id}.star --outdir ctf --backend ${backend} ${args} ${args2}
    tiltflow version --yaml "${task.process}" --tool ${backend} > versions.yml
    """

    stub:
    """
    mkdir -p ctf/${meta.id}
    touch ctf/${meta.id}/${meta.id}.star
    echo '"${task.process}": {tiltflow: stub}' > versions.yml
    """
}
