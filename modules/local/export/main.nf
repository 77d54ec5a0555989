process EXPORT {
    tag "${series.size()} tilt series"
    label 'process_single'
    container "${params.tiltflow_image}"

    input:
    path series, stageAs: 'reconstruct/*'

    output:
    path "relion", emit: relion
    path "versions.yml", emit: versions

    script:
    def args = task.ext.args ?: ''
    """
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
