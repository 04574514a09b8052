"""Log the rendered report (md, html, figures) to the study's parent run in MLflow."""
from pathlib import Path

from _log import redirect, say
from opdpipe import tracking
from opdpipe.layout import Layout, default_tracking_uri
from opdpipe.provenance import atomic_write_json

redirect(snakemake.log[0])
layout = Layout(snakemake.params.results)
uri = snakemake.params.uri or default_tracking_uri(layout)
store = tracking.init_store(uri, snakemake.params.study, layout.mlartifacts())  # finds the study's parent run
paths = tracking.log_report(tracking.mlflow_client(uri), store, Path(snakemake.input.html).parent)
atomic_write_json(snakemake.output[0], {"parent_run_id": store["parent_run_id"], "artifacts": paths})
say(f"report logged to run {store['parent_run_id']}: {paths}")
