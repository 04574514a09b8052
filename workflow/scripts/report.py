from pathlib import Path

from _log import redirect, say
from opdpipe import report

redirect(snakemake.log[0])
p = snakemake.params
out = report.run(p.settings, p.rows, snakemake.input.runs[0], p.benchmarks, Path(snakemake.output.md).parent,
                 p.config_hash)
for row in out["table"]:
    say(str(row))
