from pathlib import Path

from _log import redirect, say
from opdpipe import teacher

redirect(snakemake.log[0])
out = Path(snakemake.output.manifest).parent
teacher.run(snakemake.wildcards.task, snakemake.params.cfg, Path(snakemake.input.data).parent,
            Path(snakemake.input.tokenizer[0]).parent, out, snakemake.params.seed, snakemake.threads, log=say)
