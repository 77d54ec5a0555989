/*
 * tiltflow: gain -> import -> per tilt series motioncor .. reconstruct -> export, report.
 * Each process calls `tiltflow <step>`; all logic is in the Python package, and `tiltflow run` calls the
 * same step functions with the same layout. A series whose step exits 2 (e.g. no usable tilts left) is
 * dropped (conf/base.config) and reported; the others go on to EXPORT and REPORT.
 */

include { GAIN        } from '../modules/local/gain'
include { IMPORT      } from '../modules/local/import'
include { MOTIONCOR   } from '../modules/local/motioncor'
include { CTF         } from '../modules/local/ctf'
include { EXCLUDE     } from '../modules/local/exclude'
include { STACK       } from '../modules/local/stack'
include { ALIGN       } from '../modules/local/align'
include { RECONSTRUCT } from '../modules/local/reconstruct'
include { EXPORT      } from '../modules/local/export'
include { REPORT      } from '../modules/local/report'
include { tiltsFor; checkTiltLists } from '../subworkflows/local/utils_tiltflow_pipeline'

workflow TILTFLOW {
    take:
    mdocs      // value: sorted list of tilt-series mdocs (--watch: a channel, one [mdoc] per complete series)
    movie_dir  // value: absolute folder of the movies
    gain_raw   // channel: raw gain reference, or nothing

    main:
    GAIN(gain_raw)
    gain = GAIN.out.gain.map { dir -> file("${dir}/gain.mrc") }.ifEmpty([]).first()

    // ---- import: one task for the session, then one item per series with exactly its movies ----------
    IMPORT(mdocs, movie_dir)
    series = IMPORT.out.series
        .map { dirs ->
            def list = [dirs].flatten()
            if (!params.watch) {  // --watch: one IMPORT per series, so no task sees every name
                checkTiltLists(list.collect { dir -> dir.name })
            }
            list
        }
        .flatten()
        .map { dir -> tuple([id: dir.name], dir, file("${dir}/movies.txt").readLines().findAll { line -> line }.collect { line -> file(line) }) }

    // ---- per tilt series -------------------------------------------------------------------------------
    MOTIONCOR(series, gain)
    CTF(MOTIONCOR.out.series)
    EXCLUDE(
        CTF.out.series.join(MOTIONCOR.out.series)
            .map { meta, ctf, mc -> tuple(meta, ctf, mc, tiltsFor(params.exclude_tilts, meta.id), tiltsFor(params.keep_tilts, meta.id)) }
    )
    STACK(EXCLUDE.out.series.join(MOTIONCOR.out.series))
    ALIGN(STACK.out.series)
    RECONSTRUCT(ALIGN.out.series.join(STACK.out.series))

    // ---- session: sorted lists, so that the task hashes do not depend on completion order ---------------
    // (--watch: EXPORT and REPORT run once, when the watch has ended and the last series is done; tasks finish
    // in any order and publishDir has no order, so a per-series EXPORT could leave an older tomograms.star)
    EXPORT(RECONSTRUCT.out.series.map { _meta, dir -> dir }.collect(sort: true))
    // --watch: one IMPORT per series, each with its own import/tomograms.star (same staged name); the
    // report reads the per-series folders only
    REPORT(
        IMPORT.out.series.mix(params.watch ? channel.empty() : IMPORT.out.tomograms).collect(sort: true),
        MOTIONCOR.out.series.map { _meta, dir -> dir }.collect(sort: true).ifEmpty([]),
        CTF.out.series.map { _meta, dir -> dir }.collect(sort: true).ifEmpty([]),
        EXCLUDE.out.series.map { _meta, dir -> dir }.collect(sort: true).ifEmpty([]),
        STACK.out.series.map { _meta, dir -> dir }.collect(sort: true).ifEmpty([]),
        ALIGN.out.series.map { _meta, dir -> dir }.collect(sort: true).ifEmpty([]),
        RECONSTRUCT.out.series.map { _meta, dir -> dir }.collect(sort: true).ifEmpty([]),
        EXPORT.out.relion.ifEmpty([]),
    )

    skipped = series.map { meta, _dir, _movies -> tuple(meta.id, 'imported') }
        .join(RECONSTRUCT.out.series.map { meta, _dir -> tuple(meta.id, 'reconstructed') }, remainder: true)
        .filter { _id, _imported, done -> done == null }
        .map { id, _imported, _done -> id }
    versions = GAIN.out.versions.mix(
        IMPORT.out.versions, MOTIONCOR.out.versions, CTF.out.versions, EXCLUDE.out.versions,
        STACK.out.versions, ALIGN.out.versions, RECONSTRUCT.out.versions, EXPORT.out.versions, REPORT.out.versions,
    )

    emit:
    relion = EXPORT.out.relion
    report = REPORT.out.report
    skipped   // names of the series that did not reach RECONSTRUCT
    versions
}
