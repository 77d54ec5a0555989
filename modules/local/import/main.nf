process IMPORT {
    tag "${mdocs.size()} mdoc(s)"
    label 'process_single'
    container "${params.tiltflow_image}"

    input:
    path mdocs, stageAs: 'mdoc/*'
    path frames, stageAs: 'frames'

    output:
    path "import/*", type: 'dir', emit: series
    path "import/tomograms.star", emit: tomograms
    path "versions.yml", emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    tiltflow import mdoc/*.mdoc --outdir import --frames frames \\
        --kv ${params.kv} --cs ${params.cs} --amp-contrast ${params.amp_contrast} --hand ${params.hand} \\
        ${cliOption('tilt-axis', params.tilt_axis)} ${cliOption('dose-per-tilt', params.dose_per_tilt)} ${args}
    tiltflow version --yaml "${task.process}" > versions.yml
    """

    stub:
    """
    mkdir -p import/TS_01
    touch import/TS_01/TS_01.star import/tomograms.star
    echo '"${task.process}": {tiltflow: stub}' > versions.yml
    """
}

// "--name value" when the value is set, else nothing.
def cliOption(String name, value) {
    return (value != null && value != '') ? "--${name} ${value}" : ''
}
