// Motion correction of one tilt series (RELION MotionCorr): `tiltflow motioncor` (options from conf/modules.config ext.args; see meta.yml)
process MOTIONCOR {
    tag "${meta.id}"
    label 'process_gpu_optional'

    input:
    tuple val(meta), path(series, stageAs: 'import/*'), path(movies, stageAs: 'frames/*')
    path gain, stageAs: 'gain/*'

    output:
    tuple val(meta), path("motioncor/${meta.id}"), emit: series
    path "versions.yml", emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def backend = task.ext.backend ?: 'builtin'
    def args2 = task.ext.args2 ? "--extra-args '${task.ext.args2}'" : ''
    def gain_opt = gain ? "--gain ${gain}" : ''
    def memory_env = task.memory ? "TILTFLOW_MEMORY_GB=${task.memory.toMega() / 1024}" : ''  // tiltflow.memory
    """
    # tiltflow ${workflow.manifest.version}: a new release changes every task hash (bin/ alone is hashed)
    export TILTFLOW_THREADS=${task.cpus} OMP_NUM_THREADS=${task.cpus} ${memory_env}
    tiltflow motioncor import/${meta.id}/${meta.id}.star --outdir motioncor --backend ${backend} --frames frames ${gain_opt} ${args} ${args2}
    tiltflow version --yaml "${task.process}" --tool ${backend} > versions.yml
    """

    stub:
    """
    mkdir -p motioncor/${meta.id}
    touch motioncor/${meta.id}/${meta.id}.star
    echo '"${task.process}": {tiltflow: stub}' > versions.yml
    """
}
