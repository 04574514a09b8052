from _log import redirect, say
from opdpipe import tracking
from opdpipe.layout import Layout, default_tracking_uri
from opdpipe.provenance import atomic_write_json

redirect(snakemake.log[0])
layout = Layout(snakemake.params.results)
uri = snakemake.params.uri or default_tracking_uri(layout)
store = tracking.ensure_store(uri, snakemake.params.study, layout.mlartifacts(), log=say)
atomic_write_json(snakemake.output[0], store)
say(f"MLflow store ready: {store}")
