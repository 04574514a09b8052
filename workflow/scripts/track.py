"""Mirror every output of the study into MLflow, then read the runs back for the report."""
from _log import redirect, say
from opdpipe import tracking
from opdpipe.layout import Layout, default_tracking_uri
from opdpipe.provenance import atomic_write_json, code_version

redirect(snakemake.log[0])
p = snakemake.params
layout = Layout(p.results)
uri = p.uri or default_tracking_uri(layout)
rows = tracking.mirror_study(uri, p.study, layout.mlartifacts(), p.rows, p.world, p.variants, p.hparams,
                             {"config_hash": p.config_hash, "code_version": code_version()}, log=say)
atomic_write_json(snakemake.output[0], {"uri": uri, "experiment": tracking.experiment_name(p.study), "runs": rows})
say(f"read back {len(rows)} runs")
