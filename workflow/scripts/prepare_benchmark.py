from _log import redirect, say
from opdpipe.tasks import benchmarks

redirect(snakemake.log[0])
m = benchmarks.prepare(snakemake.wildcards.bench, snakemake.params.source,
                       snakemake.output.manifest.rsplit("/", 1)[0], snakemake.params.grader)
say(f"{m['benchmark']}: {m['count']} problems, graded by {m['grader']}")
