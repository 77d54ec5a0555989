// Tomogram reconstruction (RELION ReconstructTomograms): `tiltflow reconstruct` (options from conf/modules.config ext.args; see meta.yml)
process RECONSTRUCT {
    tag "${meta.id}"
    label 'process_gpu_optional'

    input:
    tuple val(meta), path(series, stageAs: 'align/*'), path(stack, stageAs: 'stack/*')

    output:
    tuple val(meta), path("reconstruct/${meta.id}"), emit: series
    path "versions.yml", emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def memory_env = task.memory ? "TILTFLOW_MEMORY_GB=${task.memory.toMega() / 1024}" : ''  // tiltflow.memory
    """
    # tiltflow ${workflow.manifest.version}: a new release changes every task hash (bin/ alone is hashed)
    export TILTFLOW_THREADS=${task.cpus} OMP_NUM_THREADS=${task.cpus} ${memory_env}
    tiltflow reconstruct align/${meta.id}/${meta.id}.star --outdir reconstruct ${args}
    tiltflow version --yaml "${task.process}" > versions.yml
    """

    stub:
    """
    mkdir -p reconstruct/${meta.id}
    touch reconstruct/${meta.id}/${meta.id}.star reconstruct/${meta.id}/rec_${meta.id}.mrc
    echo '"${task.process}": {tiltflow: stub}' > versions.yml
    """
}
