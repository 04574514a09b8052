from pathlib import Path

import torch

from _log import redirect, say
from opdpipe.backends import minipair
from opdpipe.data import read_jsonl
from opdpipe.provenance import atomic_write_json, provenance

redirect(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
train = [e for path in snakemake.input.train for e in read_jsonl(path)]
out = Path(snakemake.output.manifest).parent
m = minipair.build(train, snakemake.params.spec, out, snakemake.params.seed, log=say)
atomic_write_json(snakemake.output.manifest, {**m, **provenance({"mini_pair": snakemake.params.spec},
                                                                 snakemake.params.seed)})
