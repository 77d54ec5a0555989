process SIMULATE {
    tag "${preset}"
    label 'process_medium'
    container "${params.tiltflow_image}"

    input:
    val preset

    output:
    path "session", emit: session
    path "versions.yml", emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    tiltflow simulate session --preset ${preset} ${args}
    tiltflow version --yaml "${task.process}" > versions.yml
    """

    stub:
    """
    mkdir -p session
    touch session/TS_01.mrc.mdoc session/gain.mrc
    echo '"${task.process}": {tiltflow: stub}' > versions.yml
    """
}
