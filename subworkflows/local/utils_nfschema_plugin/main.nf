/*
 * Parameter validation with the nf-schema plugin (nextflow_schema.json): wrong or misspelt parameters
 * stop the run before any task starts. Only main.nf includes it, so that main_noschema.nf runs the same
 * workflow where the plugin cannot be had.
 */

include { validateParameters; paramsSummaryLog } from 'plugin/nf-schema'

workflow UTILS_NFSCHEMA_PLUGIN {
    main:
    log.info(paramsSummaryLog(workflow))
    validateParameters()
}
