// One HTML page for the whole session: `tiltflow report` (options from conf/modules.config ext.args; see meta.yml)
process REPORT {
    label 'process_single'

    input:
    path imported, stageAs: 'import/*'
    path motioncor, stageAs: 'motioncor/*'
    path ctf, stageAs: 'ctf/*'
    path exclude, stageAs: 'exclude/*'
    path stack, stageAs: 'stack/*'
    path align, stageAs: 'align/*'
    path reconstruct, stageAs: 'reconstruct/*'
    path relion, stageAs: 'relion'

    output:
    path "report", emit: report
    path "versions.yml", emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def memory_env = task.memory ? "TILTFLOW_MEMORY_GB=${task.memory.toMega() / 1024}" : ''  // tiltflow.memory
    """
    # tiltflow ${workflow.manifest.version}: a new release changes every task hash (bin/ alone is hashed)
    export TILTFLOW_THREADS=${task.cpus} OMP_NUM_THREADS=${task.cpus} ${memory_env}
    tiltflow report . --output report/report.html ${args}
    tiltflow version --yaml "${task.process}" > versions.yml
    """

    stub:
    """
    mkdir -p report
    touch report/report.html
    echo '"${task.process}": {tiltflow: stub}' > versions.yml
    """
}
