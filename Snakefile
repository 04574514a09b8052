# opdpipe: on-policy distillation (OPD / OPD+) study workflow.
#   snakemake --cores all                                 # the embedded default study
#   snakemake --cores all --configfile configs/smoke.yaml # the same DAG in a few minutes
from opdpipe.config import DEFAULT_CONFIG, load_yaml, validate

if not config:  # no --configfile: the embedded default study (a given file replaces it, never merges)
    config.update(load_yaml(DEFAULT_CONFIG))
_checked = validate(config)  # JSON schema + registry names: a malformed config starts no job
config.clear()
config.update(_checked)  # in place, so rule scripts see the defaults too

include: "workflow/rules/common.smk"
wildcard_constraints:
    task="|".join(TASKS),
    variant="|".join(v.replace("+", r"\+").replace(".", r"\.") for v in VARIANTS),
    seed=r"\d+",
    ref="teacher|sft_init",


include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/teacher.smk"
include: "workflow/rules/track.smk"  # the store is created before the training jobs that log to it
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        f"{RESULTS}/report/report.html",
