#!/usr/bin/env nextflow
/*
 * tiltflow: SerialEM cryo-ET sessions -> motion-corrected, CTF-estimated, aligned tilt series,
 * tomograms and RELION 5 input (nf-core layout: workflows/tiltflow.nf, subworkflows/local/).
 *
 *   nextflow run . -profile slurm,apptainer --input /data/session --gain /data/gain.dm4 --outdir results -resume
 *
 * main_noschema.nf is this file without the nf-schema validation, for runtimes without the plugin.
 */

include { UTILS_NFSCHEMA_PLUGIN   } from './subworkflows/local/utils_nfschema_plugin'
include { PIPELINE_INITIALISATION } from './subworkflows/local/utils_tiltflow_pipeline'
include { PIPELINE_COMPLETION     } from './subworkflows/local/utils_tiltflow_pipeline'
include { TILTFLOW                } from './workflows/tiltflow'

workflow {
    main:
    UTILS_NFSCHEMA_PLUGIN()
    PIPELINE_INITIALISATION()
    TILTFLOW(PIPELINE_INITIALISATION.out.mdocs, PIPELINE_INITIALISATION.out.movie_dir, PIPELINE_INITIALISATION.out.gain)
    PIPELINE_COMPLETION(TILTFLOW.out.skipped, PIPELINE_INITIALISATION.out.versions.mix(TILTFLOW.out.versions))
}
