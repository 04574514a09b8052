# Stage 6: the report (Table-2 analogue, curves, diagnostics, Table 1, stage times, MLflow runs).


rule report:
    input:
        runs=rules.track.output,
        evals=all_evals(),
        summaries=[f"{d}/summary.json" for d in all_run_dirs()],
    output:
        md=f"{RESULTS}/report/report.md",
        html=report(f"{RESULTS}/report/report.html", caption="../report/report.rst", category="Report"),
        curves=report(f"{RESULTS}/report/figures/curves.png", caption="../report/curves.rst", category="Figures"),
        bias=report(f"{RESULTS}/report/figures/bias.png", caption="../report/bias.rst", category="Figures"),
        grad=report(f"{RESULTS}/report/figures/grad_norm.png", caption="../report/diagnostics.rst",
                    category="Figures"),
    params:
        results=lambda w, input: os.path.dirname(os.path.dirname(input.runs[0])),
        variants=VARIANT_TABLE,
    conda:
        "../envs/opdpipe.yaml"
    log:
        f"{RESULTS}/logs/report.log",
    script:
        "../scripts/report.py"


rule track_report:
    # The report, as artifacts of the study's parent run in MLflow (report/ beside the child runs).
    input:
        store=rules.tracking_store.output,
        md=rules.report.output.md,
        html=rules.report.output.html,
    output:
        f"{RESULTS}/tracking/report_artifacts.json",
    params:
        uri=TRACKING_URI,
    conda:
        "../envs/opdpipe.yaml"
    log:
        f"{RESULTS}/logs/track_report.log",
    script:
        "../scripts/track_report.py"
