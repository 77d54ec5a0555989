// Simulate a SerialEM session (profile test): `tiltflow simulate` (options from conf/modules.config ext.args; see meta.yml)
process SIMULATE {
    tag "${preset}"
    label 'process_medium'

    input:
    val preset

    output:
    path "session", emit: session
    path "versions.yml", emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def memory_env = task.memory ? "TILTFLOW_MEMORY_GB=${task.memory.toMega() / 1024}" : ''  // tiltflow.memory
    """
    # tiltflow ${workflow.manifest.version}: a new release changes every task hash (bin/ alone is hashed)
    export TILTFLOW_THREADS=${task.cpus} OMP_NUM_THREADS=${task.cpus} ${memory_env}
    tiltflow simulate session --preset ${preset} ${args}
    tiltflow version --yaml "${task.process}" > versions.yml
    """

    stub:
    """
    mkdir -p session
    touch session/TS_01.mrc.mdoc session/TS_01_000_0.0.tif session/gain.mrc
    echo '"${task.process}": {tiltflow: stub}' > versions.yml
    """
}
