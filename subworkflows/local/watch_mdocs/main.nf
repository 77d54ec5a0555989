/*
 * WATCH_MDOCS: a session's tilt-series mdocs as each series becomes complete, for a `--watch` mode of the
 * pipeline (series granularity: the per-tilt live work is `tiltflow watch`'s).
 *
 * channel.watchPath emits an mdoc every time SerialEM appends a section to it (SerialEM writes one
 * `[ZValue = n]` section per image, AdocAppendSection in SerialEMDoc.cpp). An mdoc is passed on once it
 * has `tilts` sections and its last section is finished (SerialEM ends each with a blank line), so a
 * section still being written is waited for; each series is passed on once. The channel ends at the first
 * file event after `stop_file` exists (watchPath has no timer: the stop is seen on the next event).
 *
 * Wiring (not done here: main.nf is being restructured), for example:
 *     mdocs = params.watch
 *         ? WATCH_MDOCS("${params.input}/*.mdoc", params.watch_tilts, "${params.outdir}/STOP").mdocs.map { m -> [m] }
 *         : channel.fromPath(mdoc_glob, checkIfExists: true).collect()
 * IMPORT then runs once per complete series and the per-series steps follow as in a batch run; EXPORT
 * and REPORT (collect()) run when the watch ends.
 */

workflow WATCH_MDOCS {
    take:
    pattern     // glob of the session's mdocs, e.g. "/data/session/*.mdoc"
    tilts       // sections in a complete tilt series
    stop_file   // the watch ends at the first event after this file appears

    main:
    mdocs = channel.watchPath(pattern, 'create,modify')
        .until { _mdoc -> file(stop_file).exists() }
        .filter { mdoc -> seriesComplete(mdoc.text, tilts as int) }
        .unique { mdoc -> mdoc.name }

    emit:
    mdocs
}

/*
 * Whether mdoc text holds at least `tilts` [ZValue] sections and its last section is finished (followed
 * by a blank line; CRLF files too): tiltflow.live.completeness applies the same rule in `tiltflow watch`.
 */
def seriesComplete(text, tilts) {
    def t = text.replace('\r\n', '\n')
    def last = t.lastIndexOf('[ZValue')
    if (last < 0) {
        return false
    }
    return t.count('[ZValue') >= tilts && t.substring(last).contains('\n\n')
}
