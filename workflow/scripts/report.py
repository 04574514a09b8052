from pathlib import Path

from _log import redirect, say
from opdpipe import report

redirect(snakemake.log[0])
out = report.run(snakemake.config, snakemake.params.results, snakemake.params.variants,
                 Path(snakemake.output.md).parent)
for row in out["table"]:
    say(str(row))
