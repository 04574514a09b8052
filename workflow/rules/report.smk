# Stage 6: the report (Table-2 analogue, curves, diagnostics, Table 1, stage times, MLflow runs).


rule report:
    input:
        runs=rules.track.output,
        evals=all_evals(),
        metrics=all_metrics(),
        bench=all_benchmark_evals(),
    output:
        md=L.report_file("report.md"),
        html=report(L.report_file("report.html"), caption="../report/report.rst", category="Report"),
        figures=[report(L.figure(name), caption=f"../report/{name}.rst", category="Figures") for name in FIGURES],
    params:
        settings=report_settings(),
        rows=study_rows(),
        bench_rows=benchmark_rows(),
        benchmarks=L.path("benchmarks"),
        config_hash=config_hash(config),
    resources:
        **stage_resources("report"),
    conda:
        "../envs/opdpipe.yaml"
    log:
        L.log("report"),
    script:
        "../scripts/report.py"


rule track_report:
    # The report, as artifacts of the study's parent run in MLflow (report/ beside the child runs).
    input:
        store=rules.tracking_store.output[0],
        md=rules.report.output.md,
        html=rules.report.output.html,
        figures=rules.report.output.figures,
    output:
        L.tracking_file("report_artifacts.json"),
    params:
        uri=TRACKING_URI,
        study=STUDY,
        results=study_root_of_store,
    resources:
        **stage_resources("track"),
    conda:
        "../envs/opdpipe.yaml"
    log:
        L.log("track_report"),
    script:
        "../scripts/track_report.py"
