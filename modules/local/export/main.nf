// RELION 5 tomogram set of the reconstructed series: `tiltflow export` (options from conf/modules.config ext.args; see meta.yml)
process EXPORT {
    tag "${[series].flatten().size()} tilt series"
    label 'process_single'

    input:
    path series, stageAs: 'reconstruct/*'

    output:
    path "relion", emit: relion
    path "versions.yml", emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def memory_env = task.memory ? "TILTFLOW_MEMORY_GB=${task.memory.toMega() / 1024}" : ''  // tiltflow.memory
    """
    # tiltflow ${workflow.manifest.version}: a new release changes every task hash (bin/ alone is hashed)
    export TILTFLOW_THREADS=${task.cpus} OMP_NUM_THREADS=${task.cpus} ${memory_env}
    tiltflow export reconstruct/*/*.star --outdir relion ${args}
    tiltflow version --yaml "${task.process}" > versions.yml
    """

    stub:
    """
    mkdir -p relion/tilt_series
    touch relion/tomograms.star
    echo '"${task.process}": {tiltflow: stub}' > versions.yml
    """
}
