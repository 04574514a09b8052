"""Log the rendered report (md, html, figures) to the study's parent run in MLflow."""
import json
from pathlib import Path

from _log import redirect, say
from opdpipe import tracking
from opdpipe.provenance import atomic_write_json

redirect(snakemake.log[0])
store = json.loads(Path(snakemake.input.store[0]).read_text())
client = tracking.mlflow_client(snakemake.params.uri)
paths = tracking.log_report(client, store, Path(snakemake.input.html).parent)
atomic_write_json(snakemake.output[0], {"parent_run_id": store["parent_run_id"], "artifacts": paths})
say(f"report logged to run {store['parent_run_id']}: {paths}")
