process EXCLUDE {
    tag "${meta.id}"
    label 'process_single'
    container "${params.tiltflow_image}"

    input:
    tuple val(meta), path(series, stageAs: 'ctf/*'), path(micrographs, stageAs: 'motioncor/*')

    output:
    tuple val(meta), path("exclude/${meta.id}"), emit: series
    path "versions.yml", emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    tiltflow exclude ctf/${meta.id}/${meta.id}.star --outdir exclude \\
        ${cliOption('exclude-tilts', params.exclude_tilts)} ${cliOption('keep-tilts', params.keep_tilts)} ${args}
    tiltflow version --yaml "${task.process}" > versions.yml
    """

    stub:
    """
    mkdir -p exclude/${meta.id}
    touch exclude/${meta.id}/${meta.id}.star
    echo '"${task.process}": {tiltflow: stub}' > versions.yml
    """
}

// "--name 'value'" when the value is set, else nothing.
def cliOption(String name, value) {
    return value ? "--${name} '${value}'" : ''
}
