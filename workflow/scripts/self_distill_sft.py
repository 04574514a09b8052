from pathlib import Path

from _log import redirect, say
from opdpipe import self_distill

redirect(snakemake.log[0])
self_distill.prepare_sft(snakemake.params.spec, snakemake.input.completions, Path(snakemake.input.source).parent,
                         snakemake.output[0], snakemake.params.seed, log=say)
