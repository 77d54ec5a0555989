#!/usr/bin/env nextflow
/*
 * main.nf without the nf-schema plugin: the same workflow, for a Nextflow that cannot load plugins
 * (offline; tools/nextflow/nextflow). nextflow.config selects it when TILTFLOW_NFSCHEMA=false.
 */

include { PIPELINE_INITIALISATION } from './subworkflows/local/utils_tiltflow_pipeline'
include { PIPELINE_COMPLETION     } from './subworkflows/local/utils_tiltflow_pipeline'
include { TILTFLOW                } from './workflows/tiltflow'

workflow {
    main:
    log.warn("nf-schema is not loaded (TILTFLOW_NFSCHEMA=false): parameters are not checked against nextflow_schema.json")
    PIPELINE_INITIALISATION()
    TILTFLOW(PIPELINE_INITIALISATION.out.mdocs, PIPELINE_INITIALISATION.out.movie_dir, PIPELINE_INITIALISATION.out.gain)
    PIPELINE_COMPLETION(TILTFLOW.out.skipped, PIPELINE_INITIALISATION.out.versions.mix(TILTFLOW.out.versions))
}
