// Gain reference in the movies' orientation: `tiltflow gain` (options from conf/modules.config ext.args; see meta.yml)
process GAIN {
    tag "${gain.name}"
    label 'process_single'

    input:
    path gain, stageAs: 'raw/*'

    output:
    path "gain", emit: gain
    path "versions.yml", emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def memory_env = task.memory ? "TILTFLOW_MEMORY_GB=${task.memory.toMega() / 1024}" : ''  // tiltflow.memory
    """
    # tiltflow ${workflow.manifest.version}: a new release changes every task hash (bin/ alone is hashed)
    export TILTFLOW_THREADS=${task.cpus} OMP_NUM_THREADS=${task.cpus} ${memory_env}
    tiltflow gain ${gain} --outdir gain ${args}
    tiltflow version --yaml "${task.process}" > versions.yml
    """

    stub:
    """
    mkdir -p gain
    touch gain/gain.mrc gain/console.log gain/error.log
    echo '"${task.process}": {tiltflow: stub}' > versions.yml
    """
}
