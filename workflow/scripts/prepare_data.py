from _log import redirect, say
from opdpipe import data

redirect(snakemake.log[0])
m = data.run(snakemake.wildcards.task, snakemake.params.spec, snakemake.params.seed,
             snakemake.output.manifest.rsplit("/", 1)[0])
say(f"wrote {m['splits']}")
