#!/usr/bin/env nextflow
/*
 * tiltflow: SerialEM cryo-ET sessions -> motion-corrected, CTF-estimated, aligned tilt series,
 * tomograms and RELION 5 input. Each process calls `tiltflow <step>`; all logic is in the Python package.
 *
 *   nextflow run . -profile slurm,apptainer --input /data/session --gain /data/gain.dm4 --outdir results -resume
 */

include { validateParameters } from 'plugin/nf-schema'
include { SIMULATE    } from './modules/local/simulate'
include { GAIN        } from './modules/local/gain'
include { IMPORT      } from './modules/local/import'
include { MOTIONCOR   } from './modules/local/motioncor'
include { CTF         } from './modules/local/ctf'
include { EXCLUDE     } from './modules/local/exclude'
include { STACK       } from './modules/local/stack'
include { ALIGN       } from './modules/local/align'
include { RECONSTRUCT } from './modules/local/reconstruct'
include { EXPORT      } from './modules/local/export'
include { REPORT      } from './modules/local/report'

workflow {
    main:
    // wrong or misspelt parameters stop the run before any task starts (nextflow_schema.json)
    validateParameters()
    versions = channel.empty()

    // ---- session: a folder, an mdoc glob, or (profile test) a simulated session ---------------
    if (params.simulate) {
        SIMULATE(params.simulate)
        versions = versions.mix(SIMULATE.out.versions)
        session = SIMULATE.out.session
        mdocs = session.map { dir -> files("${dir}/*.mdoc") }
        frames = session
        gain_raw = session.map { dir -> file("${dir}/gain.mrc") }
    }
    else {
        if (!params.input) {
            error("Missing --input: a SerialEM session folder or an mdoc glob (e.g. '/data/session/*.mdoc')")
        }
        input_is_dir = file(params.input).isDirectory()
        mdoc_glob = input_is_dir ? "${params.input}/*.mdoc" : params.input
        mdocs = channel.fromPath(mdoc_glob, checkIfExists: true).collect()
        frames_dir = params.frames ?: (input_is_dir ? params.input : file(mdoc_glob).first().parent)
        frames = channel.value(file(frames_dir, checkIfExists: true))
        gain_raw = params.gain ? channel.value(file(params.gain, checkIfExists: true)) : channel.empty()
    }

    // ---- gain preparation (optional) ----------------------------------------------------------
    GAIN(gain_raw)
    versions = versions.mix(GAIN.out.versions)
    gain = GAIN.out.gain.map { dir -> file("${dir}/gain.mrc") }.ifEmpty([]).first()

    // ---- import: one task for the session, then one channel item per tilt series ----------------
    IMPORT(mdocs, frames.first())
    versions = versions.mix(IMPORT.out.versions)
    series = IMPORT.out.series.flatten().map { dir -> tuple([id: dir.name], dir) }

    // ---- per-tilt-series steps -----------------------------------------------------------------
    MOTIONCOR(series, frames.first(), gain)
    CTF(MOTIONCOR.out.series)
    EXCLUDE(CTF.out.series.join(MOTIONCOR.out.series))
    STACK(EXCLUDE.out.series.join(MOTIONCOR.out.series))
    ALIGN(STACK.out.series)
    RECONSTRUCT(ALIGN.out.series.join(STACK.out.series))
    versions = versions.mix(
        MOTIONCOR.out.versions, CTF.out.versions, EXCLUDE.out.versions,
        STACK.out.versions, ALIGN.out.versions, RECONSTRUCT.out.versions,
    )

    // ---- session-level outputs -------------------------------------------------------------------
    EXPORT(RECONSTRUCT.out.series.map { _meta, dir -> dir }.collect())
    REPORT(
        MOTIONCOR.out.series.map { _meta, dir -> dir }.collect(),
        CTF.out.series.map { _meta, dir -> dir }.collect(),
        EXCLUDE.out.series.map { _meta, dir -> dir }.collect(),
        STACK.out.series.map { _meta, dir -> dir }.collect(),
        ALIGN.out.series.map { _meta, dir -> dir }.collect(),
        RECONSTRUCT.out.series.map { _meta, dir -> dir }.collect(),
        EXPORT.out.relion,
    )
    versions = versions.mix(EXPORT.out.versions, REPORT.out.versions)
    versions.unique().collectFile(name: 'software_versions.yml', storeDir: "${params.outdir}/pipeline_info", sort: true)
}
