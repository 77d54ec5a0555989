// Follow a session while it is collected (--watch): `tiltflow follow` (options from conf/modules.config ext.args; see meta.yml)
// Runs until the watch ends, announcing each complete series into `ready` (subworkflows/local/watch_mdocs).
process FOLLOW {
    tag "${folder}"
    label 'process_single'
    // it must look at the folder again on every launch (-resume too): what it announces is not a file it made
    cache false

    input:
    val folder     // the session folder (not staged: it is still being written)
    val movie_dir
    val ready      // folder the pipeline watches for the announcements
    val stop_file  // the watch ends when this file appears (absolute)

    output:
    path "follow.log", emit: log
    path "versions.yml", emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def memory_env = task.memory ? "TILTFLOW_MEMORY_GB=${task.memory.toMega() / 1024}" : ''  // tiltflow.memory
    """
    # tiltflow ${workflow.manifest.version}: a new release changes every task hash (bin/ alone is hashed)
    export TILTFLOW_THREADS=${task.cpus} OMP_NUM_THREADS=${task.cpus} ${memory_env}
    set -o pipefail
    tiltflow follow '${folder}' --frames '${movie_dir}' --ready '${ready}' --stop-file '${stop_file}' ${args} 2>&1 | tee follow.log
    tiltflow version --yaml "${task.process}" > versions.yml
    """

    stub:
    """
    for m in '${folder}'/*.mdoc; do
        name=\$(basename "\$m"); name=\${name%.mdoc}; name=\${name%.mrc}; name=\${name%.tif}
        echo "\$m" > '${ready}'/.part && mv '${ready}'/.part "${ready}/watch_series_\$name"
    done
    echo 'stopped by stub' > '${ready}'/.part && mv '${ready}'/.part '${ready}'/watch_end
    touch follow.log
    echo '"${task.process}": {tiltflow: stub}' > versions.yml
    """
}
