from _log import redirect, say
from opdpipe import tracking
from opdpipe.provenance import atomic_write_json

redirect(snakemake.log[0])
store = tracking.init_store(snakemake.params.uri, snakemake.params.study, snakemake.params.artifacts)
atomic_write_json(snakemake.output[0], store)
say(f"MLflow store ready: {store}")
