/*
 * WATCH_MDOCS (--watch): the session's tilt-series mdocs, one item per series as each becomes complete,
 * while SerialEM is still collecting (series granularity: the per-tilt live work is `tiltflow watch`'s).
 *
 * FOLLOW runs `tiltflow follow` for the whole watch: it applies `tiltflow watch`'s rules (python/tiltflow/
 * live/follow.py: a series is complete at --watch_tilts sections, or --watch_series_idle s without a new
 * one, every movie complete; the watch ends after --watch_until s with nothing new or when the stop
 * file appears) and announces each complete series as a file in `ready`. channel.watchPath follows that
 * folder, not the session itself, because watchPath has no timer (it cannot see a series or a session
 * go idle) and its watcher keeps the run alive until the watched channel ends: here it ends on FOLLOW's
 * last file, watch_end.
 */

include { FOLLOW } from '../../../modules/local/follow'

workflow WATCH_MDOCS {
    take:
    folder     // the session folder (absolute)
    movie_dir  // the movie folder (absolute)

    main:
    // one folder per launch (runName changes with every launch, -resume too); it must exist before
    // watchPath starts, and FOLLOW starts after it
    def ready = file("${workflow.workDir}/tiltflow-watch/${workflow.runName}")
    ready.mkdirs()
    // absolute: FOLLOW runs in its task folder
    def stop_file = file(params.watch_stop_file ?: "${params.outdir}/STOP").toString()
    FOLLOW(folder, movie_dir, ready.toString(), stop_file)
    mdocs = channel.watchPath("${ready}/watch_*", 'create')
        .until { f -> f.name == 'watch_end' }
        .map { f -> file(f.text.trim()) }

    emit:
    mdocs      // channel: one mdoc per complete series
    follow_log = FOLLOW.out.log
    versions = FOLLOW.out.versions
}
