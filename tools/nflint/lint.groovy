// Lint Nextflow scripts and configs with Nextflow's own front end (nf-lang), as `nextflow lint` does.
// Usage: java -cp language-server-all.jar groovy.ui.GroovyMain lint.groovy FILE...
// Prints one line per problem: "<file>:<line>:<col>: error|warning: <message>"; exits 1 on errors.
import nextflow.script.control.ScriptParser
import nextflow.config.control.ConfigParser
import nextflow.script.control.ParanoidWarning
import org.codehaus.groovy.control.messages.SyntaxErrorMessage
import org.codehaus.groovy.syntax.SyntaxException

def scripts = args.findAll { it.endsWith('.nf') }.collect { new File(it) }
def configs = args.findAll { it.endsWith('.config') }.collect { new File(it) }
int errors = 0

def report = { parser ->
    parser.analyze()
    parser.compiler().getSources().values().each { source ->
        def name = source.getName()
        def collector = source.getErrorCollector()
        (collector.getErrors() ?: []).each { msg ->
            if (msg instanceof SyntaxErrorMessage) {
                SyntaxException cause = msg.getCause()
                println "${name}:${cause.getStartLine()}:${cause.getStartColumn()}: error: ${cause.getOriginalMessage()}"
            } else if (msg.metaClass.respondsTo(msg, 'getCause') && msg.getCause() != null) {
                // an ExceptionMessage follows each syntax error; report only those that say something
                def text = msg.getCause().getMessage()
                if (text == null) return
                println "${name}: error: ${text}"
            } else {
                println "${name}: error: ${msg}"
            }
            errors++
        }
        (collector.getWarnings() ?: []).each { w ->
            if (w instanceof ParanoidWarning) return
            def ctx = w.getContext()
            def line = ctx != null ? ctx.getStartLine() : 0
            println "${name}:${line}: warning: ${w.getMessage()}"
        }
    }
}

if (scripts) {
    def sp = new ScriptParser()
    scripts.each { sp.parse(it) }
    report(sp)
}
if (configs) {
    def cp = new ConfigParser()
    configs.each { cp.parse(it) }
    report(cp)
}
println "nflint: ${scripts.size()} scripts, ${configs.size()} configs, ${errors} errors"
System.exit(errors ? 1 : 0)
