# Stage 6: the report (Table-2 analogue, curves, diagnostics, Table 1, stage times, MLflow runs).


rule report:
    input:
        runs=rules.track.output,
        evals=all_evals(),
        metrics=all_metrics(),
    output:
        md=L.report_file("report.md"),
        html=report(L.report_file("report.html"), caption="../report/report.rst", category="Report"),
        figures=[report(L.figure(name), caption=f"../report/{name}.rst", category="Figures") for name in FIGURES],
    params:
        settings=report_settings(),
        rows=study_rows(),
        benchmarks=L.path("benchmarks"),
        config_hash=config_hash(config),
    conda:
        "../envs/opdpipe.yaml"
    log:
        L.log("report"),
    script:
        "../scripts/report.py"
