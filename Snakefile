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
    bench="|".join(BENCHMARKS.fixed_names()),


include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/teacher.smk"
if GROUPS:  # on-policy self-distillation: the group's data and SFT examples (no teacher stage)

    include: "workflow/rules/self_distill.smk"
include: "workflow/rules/track.smk"  # the store is created before the training jobs that log to it
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


# Every product of the study is a target, not only the report: an output that goes missing (say, a
# killed forced re-run deleted a run's final/ and summary.json) is made again by a plain re-run,
# instead of being skipped because the report downstream of it still exists.
rule all:
    input:
        L.report_file("report.html"),
        L.tracking_file("report_artifacts.json"),
        tracking_store_outputs(),  # a deleted (or set-aside damaged) store is made again and rebuilt
        L.tracking_file("runs.json"),
        all_evals(),
        all_summaries(),
        all_metrics(),
        all_finals(),
        all_benchmark_evals(),


# Every job is a new Python process that imports opdpipe (and the rule scripts' _log). Where Python
# writes no bytecode itself (PYTHONDONTWRITEBYTECODE, a read-only cache), each job would compile
# those sources again, about 0.3 s per job; compiled once here, each job reads the .pyc files.
onstart:
    import compileall, opdpipe

    for src in (os.path.dirname(opdpipe.__file__), os.path.join(workflow.basedir, "workflow", "scripts")):
        compileall.compile_dir(src, quiet=2)  # best effort: a folder it cannot write is left as it is
    # A local run's jobs are forked from one resident worker that has imported torch, transformers and
    # lm-eval once (opdpipe/worker.py; OPDPIPE_RESIDENT_WORKER=0 turns it off). Not under a cluster executor.
    from opdpipe import worker

    if workflow.local_exec and not workflow.remote_exec and worker.wanted():
        worker.start(os.path.join(".snakemake", "log", "opdpipe-worker.log"))
