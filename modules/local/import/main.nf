// Import the session: tilt order, dose, movies (RELION ImportTomo): `tiltflow import` (options from conf/modules.config ext.args; see meta.yml)
process IMPORT {
    // one mdoc (--watch imports each series on its own): its name, so that the trace tells the tasks apart
    tag "${[mdocs].flatten().size() == 1 ? [mdocs].flatten()[0].toString().tokenize('/')[-1] : "${[mdocs].flatten().size()} mdoc(s)"}"
    label 'process_single'

    input:
    path mdocs, stageAs: 'mdoc/*'
    val movie_dir

    output:
    path "import/*", type: 'dir', emit: series
    path "import/tomograms.star", emit: tomograms
    path "versions.yml", emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def memory_env = task.memory ? "TILTFLOW_MEMORY_GB=${task.memory.toMega() / 1024}" : ''  // tiltflow.memory
    """
    # tiltflow ${workflow.manifest.version}: a new release changes every task hash (bin/ alone is hashed)
    export TILTFLOW_THREADS=${task.cpus} OMP_NUM_THREADS=${task.cpus} ${memory_env}
    # the real paths go into the STAR files, so that they resolve from results/ too
    tiltflow import \$(readlink -f mdoc/*.mdoc) --outdir import --frames '${movie_dir}' ${args}
    tiltflow version --yaml "${task.process}" > versions.yml
    """

    stub:
    """
    for m in mdoc/*.mdoc; do
        name=\$(basename "\$m"); name=\${name%.mdoc}; name=\${name%.mrc}; name=\${name%.tif}
        mkdir -p "import/\$name"; touch "import/\$name/\$name.star" "import/\$name/movies.txt"
    done
    touch import/tomograms.star
    echo '"${task.process}": {tiltflow: stub}' > versions.yml
    """
}
