# opdpipe: on-policy distillation (OPD / OPD+) study workflow.
#   snakemake --cores all                                 # the embedded default study
#   snakemake --cores all --configfile configs/smoke.yaml # the same DAG in a few minutes
from opdpipe.config import validate

configfile: "configs/default.yaml"

config = validate(config)  # JSON schema + registry names: a malformed config starts no job

include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/teacher.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/track.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        f"{RESULTS}/report/report.html",
