from pathlib import Path

from _log import redirect, say
from opdpipe import self_distill

redirect(snakemake.log[0])
self_distill.prepare_data(snakemake.params.spec, Path(snakemake.input.source).parent,
                          Path(snakemake.output.manifest).parent, snakemake.output.hint_test, snakemake.params.seed,
                          log=say)
