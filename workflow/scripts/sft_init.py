from pathlib import Path

from _log import redirect, say
from opdpipe import student

redirect(snakemake.log[0])
student.run(snakemake.wildcards.task, snakemake.params.student, snakemake.input.completions,
            Path(snakemake.input.tokenizer[0]).parent, Path(snakemake.output.manifest).parent,
            snakemake.params.seed, snakemake.threads, log=say)
