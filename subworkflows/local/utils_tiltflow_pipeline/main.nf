/*
 * Initialisation (which session, which movies, which gain) and completion (versions, skipped series)
 * of the tiltflow pipeline, and the helpers main.nf and workflows/tiltflow.nf share.
 */

include { SIMULATE } from '../../../modules/local/simulate'
include { WATCH_MDOCS } from '../watch_mdocs'

workflow PIPELINE_INITIALISATION {
    main:
    checkBackends()
    versions = channel.empty()
    if (params.input && params.watch) {
        // --watch: a session still being collected; one item per series as it becomes complete
        def folder = file(params.input.toString())
        if (!folder.isDirectory()) {
            error("--input ${params.input}: --watch needs the session folder SerialEM writes into")
        }
        def movies = params.frames ? file(params.frames, checkIfExists: true) : folder
        WATCH_MDOCS(folder.toRealPath().toString(), movies.toRealPath().toString())
        mdocs = WATCH_MDOCS.out.mdocs.map { mdoc -> [mdoc] }
        movie_dir = channel.value(movies.toRealPath().toString())
        // unlike `tiltflow watch`, the gain must be there at launch (GAIN stages it when the run starts)
        gain = params.gain ? channel.of(file(params.gain, checkIfExists: true)) : channel.empty()
        versions = WATCH_MDOCS.out.versions
    }
    else if (params.input) {
        // a real session: mdocs and gain are files the user gave
        found = sessionInput(params.input.toString(), params.frames)
        mdocs = channel.value(found.mdocs)
        movie_dir = channel.value(found.movie_dir)
        gain = params.gain ? channel.of(file(params.gain, checkIfExists: true)) : channel.empty()
    }
    else if (params.simulate) {
        // profile test: a simulated SerialEM session (mdocs, movies and gain)
        SIMULATE(params.simulate)
        versions = SIMULATE.out.versions
        mdocs = SIMULATE.out.session.map { dir -> files("${dir}/*.mdoc").sort { f -> f.name } }
        movie_dir = SIMULATE.out.session.map { dir -> dir.toString() }
        gain = SIMULATE.out.session.map { dir -> file("${dir}/gain.mrc") }
    }
    else {
        error("Missing --input: a SerialEM session folder, one .mdoc file or a quoted mdoc glob ('/data/session/*.mdoc')")
    }

    emit:
    mdocs      // value: the tilt-series mdocs, sorted (--watch: a channel, one [mdoc] per complete series)
    movie_dir  // value: the folder holding the movies (absolute)
    gain       // channel: the raw gain reference, or nothing
    versions
}

workflow PIPELINE_COMPLETION {
    take:
    skipped   // channel: names of series that did not reach RECONSTRUCT
    versions  // channel: versions.yml of every task

    main:
    // one block per process: the files of N series are identical, their text is de-duplicated
    versions.map { f -> f.text }.unique().collectFile(name: 'software_versions.yml', storeDir: "${params.outdir}/pipeline_info", sort: true, newLine: true)
    skipped.subscribe { name ->
        log.warn("${name}: skipped after a failed step (see report/report.html and pipeline_info/execution_trace.txt)")
    }
}

/*
 * The session's mdocs and movie folder from --input, by the rule `tiltflow run`, `watch` and `inspect` use
 * (python/tiltflow/metadata/discover.py MDOC_GLOB, session_mdocs; tests/test_discovery.py checks they agree):
 * a folder means its top-level mdocs (the suffix in any case, no hidden files), an .mdoc file means that
 * series, a (quoted) glob the mdocs it matches. Movies: --frames, else the folder of the (first) mdoc.
 */
def sessionInput(String input, frames) {
    def mdocs = []
    def folder = null
    if (input =~ /[*?\[{]/) {
        mdocs = files(input)
        folder = mdocs ? mdocs[0].parent : null
    }
    else {
        def path = file(input)
        if (path.isDirectory()) {
            mdocs = files("${path}/*.[mM][dD][oO][cC]")
            folder = path
        }
        else if (path.exists() && path.name.toLowerCase().endsWith('.mdoc')) {
            mdocs = [path]
            folder = path.parent
        }
        else {
            error("--input ${input}: not a session folder, an .mdoc file or a glob of mdoc files")
        }
    }
    mdocs = mdocs.findAll { f -> f.isFile() && f.name.toLowerCase().endsWith('.mdoc') && !f.name.startsWith('.') }.sort { f -> f.toString() }
    if (!mdocs) {
        error("--input ${input}: no .mdoc file found")
    }
    def movies = frames ? file(frames, checkIfExists: true) : folder
    return [mdocs: mdocs, movie_dir: movies.toRealPath().toString()]
}

/*
 * The entries of an --exclude_tilts/--keep_tilts list ("TS_01:3,4;TS_02:7-9") that name `series`, or ''
 * (runner/options.py tilts_for): each EXCLUDE task sees only its own series' entries.
 */
def tiltsFor(text, String series) {
    if (!text) {
        return ''
    }
    def mine = text.toString().trim().split(/[;\s]+/).findAll { part -> seriesOf(part) == series }
    return mine.join(';')
}

// Every series named in --exclude_tilts/--keep_tilts exists (runner/options.py check_overrides).
def checkTiltLists(List names) {
    ['exclude_tilts', 'keep_tilts'].each { key ->
        def text = params[key]
        def named = text ? text.toString().trim().split(/[;\s]+/).findAll { part -> part }.collect { part -> seriesOf(part) } : []
        def unknown = (named - names).unique().sort()
        if (unknown) {
            error("--${key}: no tilt series named ${unknown.join(', ')} (series: ${names.sort().join(', ')})")
        }
    }
}

def seriesOf(String entry) {
    return entry.contains(':') ? entry.substring(0, entry.lastIndexOf(':')) : entry
}

// External GPU programs need a GPU task, and an image where containers are used.
def checkBackends() {
    // RELION's own motion correction (--motioncor_backend relion) runs on the CPU
    def gpu_tools = [params.motioncor_backend, params.align_backend].findAll { b -> !(b in ['builtin', 'relion']) }
    if (gpu_tools && !workflow.profile.tokenize(',').contains('gpu') && !workflow.stubRun) {
        error("--motioncor_backend/--align_backend ${gpu_tools.join(', ')} runs on a GPU: add -profile gpu")
    }
    if (params.motioncor_backend != 'builtin' && workflow.containerEngine && !params.motioncor_image) {
        error("--motioncor_backend ${params.motioncor_backend} in a container needs --motioncor_image (MotionCor2/3 images are built locally, see containers/README.md)")
    }
}
