// Automatic and user tilt exclusion of one tilt series (RELION ExcludeTiltImages): `tiltflow exclude` (options from conf/modules.config ext.args; see meta.yml)
process EXCLUDE {
    tag "${meta.id}"
    label 'process_single'

    input:
    tuple val(meta), path(series, stageAs: 'ctf/*'), path(micrographs, stageAs: 'motioncor/*'), val(exclude_tilts), val(keep_tilts)

    output:
    tuple val(meta), path("exclude/${meta.id}"), emit: series
    path "versions.yml", emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    // only this series' entries reach the task, so a change for another series leaves its hash alone
    def user = [exclude_tilts ? "--exclude-tilts '${exclude_tilts}'" : '', keep_tilts ? "--keep-tilts '${keep_tilts}'" : '']
    def memory_env = task.memory ? "TILTFLOW_MEMORY_GB=${task.memory.toMega() / 1024}" : ''  // tiltflow.memory
    """
    # tiltflow ${workflow.manifest.version}: a new release changes every task hash (bin/ alone is hashed)
    export TILTFLOW_THREADS=${task.cpus} OMP_NUM_THREADS=${task.cpus} ${memory_env}
    tiltflow exclude ctf/${meta.id}/${meta.id}.star --outdir exclude ${user.join(' ')} ${args}
    tiltflow version --yaml "${task.process}" > versions.yml
    """

    stub:
    """
    mkdir -p exclude/${meta.id}
    touch exclude/${meta.id}/${meta.id}.star
    echo '"${task.process}": {tiltflow: stub}' > versions.yml
    """
}
