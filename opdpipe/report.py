"""The study report: a Table-2 analogue with confidence intervals, training curves, diagnostics,
the advantage formulas (Table 1), stage wall times and the runs read back from MLflow.

Writes report.md and a self-contained report.html (figures embedded) plus the PNG figures.
"""
from __future__ import annotations

import base64
import json
import math
import re
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from opdpipe import mlflow_views  # noqa: E402
from opdpipe.divergences import DIVERGENCES, get_divergence  # noqa: E402
from opdpipe.provenance import atomic_write_text, provenance  # noqa: E402
from opdpipe.tracking import is_collapsed  # noqa: E402

# two-sided 95% Student-t quantiles t_{0.975, df} for df = 1..30 (normal beyond)
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042]
COLORS = {"reverse_kl": "tab:blue", "forward_kl": "tab:red", "jsd": "tab:green"}


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% t-interval over seeds (nan half-width for one seed)."""
    n = len(values)
    m = statistics.fmean(values)
    if n < 2:
        return m, float("nan")
    t = T975[n - 2] if n - 1 <= len(T975) else 1.96
    return m, t * statistics.stdev(values) / math.sqrt(n)


def _fmt(m: float, h: float) -> str:
    return f"{100 * m:.1f}" + ("" if math.isnan(h) else f" ± {100 * h:.1f}")


def collect(rows: list[dict], variants: dict[str, dict], which: str = "eval") -> pd.DataFrame:
    """One line per evaluated row of the study; `rows` name each row's files (the workflow's study_rows).
    which: "eval" (final/) or "eval_best" (best/ by validation; teacher / SFT-init rows have one evaluation)."""
    out = []
    for r in rows:
        ev = json.loads(Path(r.get(which) or r["eval"]).read_text())
        kind = {"divergence": "—", "design": r["variant"]} if r["seed"] is None else variants[r["variant"]]
        out.append({"task": r["task"], "variant": r["variant"], "seed": r["seed"], **kind, "avg_at_k": ev["avg_at_k"],
                    "avg_se": ev["avg_at_k_stderr"], "greedy": ev["greedy_acc"], "k": ev["k"],
                    "best_step": ev.get("best", {}).get("step")})
    return pd.DataFrame(out)


def main_table(df: pd.DataFrame, tasks: list[str], labels: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """Rows teacher, SFT-init, variants; per task avg@k mean ± 95% CI and greedy (and the chosen steps per
    seed, for best-by-validation checkpoints); collapse flags.
    labels: a column group's heading where it is not the task's name (the self-distillation group)."""
    out, collapsed, labels = [], {}, labels or {}
    order = ["teacher", "sft_init"] + [v for v in dict.fromkeys(df["variant"]) if v not in ("teacher", "sft_init")]
    for vid in order:
        row = {"variant": vid}
        for task in tasks:
            sub = df[(df.task == task) & (df.variant == vid)]
            base = df[(df.task == task) & (df.variant == "sft_init")]["avg_at_k"].iloc[0]
            if vid in ("teacher", "sft_init"):  # one evaluation: CI from lm-eval's stderr
                m, h = sub["avg_at_k"].iloc[0], 1.96 * sub["avg_se"].iloc[0]
            else:
                m, h = mean_ci(list(sub["avg_at_k"]))
            flag = vid not in ("teacher", "sft_init") and is_collapsed(m, base)
            collapsed[(task, vid)] = flag
            name = labels.get(task, task)
            row[f"{name} avg@k"] = _fmt(m, h) + (" (collapsed)" if flag else "")
            row[f"{name} greedy"] = f"{100 * sub['greedy'].mean():.1f}"
            if sub["best_step"].notna().any():
                row[f"{name} best step"] = ", ".join(str(int(x)) for x in sub["best_step"])
        out.append(row)
    return pd.DataFrame(out).fillna(""), collapsed


def self_teacher_table(df: pd.DataFrame, groups: dict[str, str]) -> pd.DataFrame:
    """Per self-distillation group: the self-teacher with the reference solution in its prompt (the
    group's teacher row) and without it (its SFT-init row), avg@k ± 1.96 stderr and greedy; the gap is
    the headroom self-distillation can close."""
    out = []
    for group, source in groups.items():
        sub = df[df.task == group].set_index("variant")
        hint, plain = sub.loc["teacher"], sub.loc["sft_init"]
        for what, r in (("with the reference solution (self-teacher)", hint), ("without it (SFT-init)", plain)):
            out.append({"group": f"{group} ({source})", "SFT-init checkpoint": what,
                        "avg@k": _fmt(r["avg_at_k"], 1.96 * r["avg_se"]), "greedy": f"{100 * r['greedy']:.1f}"})
        out.append({"group": f"{group} ({source})", "SFT-init checkpoint": "gap (headroom)",
                    "avg@k": f"{100 * (hint['avg_at_k'] - plain['avg_at_k']):+.1f}",
                    "greedy": f"{100 * (hint['greedy'] - plain['greedy']):+.1f}"})
    return pd.DataFrame(out)


def benchmark_table(bench_rows: list[dict]) -> pd.DataFrame:
    """Rows teacher, SFT-init, variants; per task x benchmark avg@k (CI as in the main table) and greedy."""
    if not bench_rows:
        return pd.DataFrame()
    df = pd.DataFrame([{**r, **{k: v for k, v in json.loads(Path(r["eval"]).read_text()).items()
                                if k in ("avg_at_k", "avg_at_k_stderr", "greedy_acc", "k")}} for r in bench_rows])
    out = []
    for vid in dict.fromkeys(df["variant"]):
        row = {"variant": vid}
        for (task, bench), sub in df[df.variant == vid].groupby(["task", "bench"], sort=False):
            if sub["seed"].isna().all():  # a reference row: one evaluation, interval from lm-eval's stderr
                m, h = sub["avg_at_k"].iloc[0], 1.96 * sub["avg_at_k_stderr"].iloc[0]
            else:
                m, h = mean_ci(list(sub["avg_at_k"]))
            row[f"{bench} avg@{int(sub['k'].iloc[0])}"] = _fmt(m, h)
            row[f"{bench} greedy"] = f"{100 * sub['greedy_acc'].mean():.1f}"
        out.append(row)
    return pd.DataFrame(out)


def _curves(rows: list[dict], task: str, vid: str) -> list[pd.DataFrame]:
    frames = []
    for r in rows:
        if r["task"] == task and r["variant"] == vid and r["seed"] is not None:
            lines = Path(r["metrics"]).read_text().splitlines()
            frames.append(pd.DataFrame([json.loads(x) for x in lines if x.strip()]))
    return frames


def _style(v: dict) -> dict:
    return {"color": COLORS.get(v["divergence"], None), "linestyle": "-" if v["design"] == "opd_plus" else "--"}


def figure_curves(rows, tasks, variants, key, ylabel, path, title, smooth: int = 1):
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for vid, v in variants.items():
            frames = [f[["step", key]].dropna() for f in _curves(rows, task, vid) if key in f]
            if not frames:
                continue
            mean = pd.concat(frames).groupby("step")[key].mean().rolling(smooth, min_periods=1).mean()
            ax.plot(mean.index, mean.values, label=vid, **_style(v))
        ax.set_title(f"{task}: {title}")
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def formulas_table(names: list[str]) -> pd.DataFrame:
    rows = []
    for n in names:
        d = get_divergence(n)
        rows.append({"divergence": n, "f(u)": d.formula_f, "OPD advantage": "-f(u)", "OPD+ advantage w_f(u)": d.formula_w,
                     "description": d.description})
    return pd.DataFrame(rows)


def stage_times(benchmarks: Path) -> pd.DataFrame:
    rows = []
    for tsv in sorted(benchmarks.rglob("*.tsv")):
        stage = tsv.relative_to(benchmarks).parts[0]
        s = pd.read_csv(tsv, sep="\t")["s"].iloc[0]
        rows.append({"stage": stage, "s": s})
    if not rows:
        return pd.DataFrame(columns=["stage", "jobs", "total s", "mean s", "max s"])
    df = pd.DataFrame(rows).groupby("stage")["s"].agg(["count", "sum", "mean", "max"]).reset_index()
    df.columns = ["stage", "jobs", "total s", "mean s", "max s"]
    return df.round(1)


FIGS = {  # name: (metric, y label, title, smoothing window in steps); names are layout.FIGURES
    "curves": ("val/avg_at_k", "avg@k at T = 1 (validation)", "validation avg@k (OPD+ solid, OPD dashed)", 1),
    "greedy": ("val/greedy_acc", "greedy accuracy (validation)", "validation greedy accuracy", 1),
    "sampled": ("rollout/acc", "accuracy of the rollouts (T = 1)", "sampled accuracy, 10-step mean", 10),
    "grad_norm": ("grad_norm", "gradient norm", "gradient norm", 1),
    "log_ratio": ("log_u/mean", "mean log u", "mean log-ratio (-reverse KL estimate)", 1),
    "length": ("response/len_mean", "tokens", "response length", 1),
    "bias": ("bias/cos_expected", "cosine", "bias meter: cos(design gradient, exact gradient)", 1),
}


def run(settings: dict, rows: list[dict], runs_json: str | Path, benchmarks: str | Path, out_dir: str | Path,
        cfg_hash: str, bench_rows: list[dict] | None = None) -> dict:
    """settings: {study, tasks, seeds, variants}; rows: the study's rows with their files (eval, metrics);
    bench_rows: one per row and math benchmark ({task, variant, seed, bench, eval}), if any."""
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    tasks, seeds, variants = settings["tasks"], settings["seeds"], settings["variants"]
    df = collect(rows, variants, "eval_best")  # the paper's way: each run's best checkpoint by validation avg@k
    groups = settings.get("self_distillation", {})  # {group: source task}
    labels = {g: f"self-distillation ({src})" for g, src in groups.items()}
    table, collapsed = main_table(df, tasks, labels)
    final, final_collapsed = main_table(collect(rows, variants, "eval"), tasks, labels)
    bench = benchmark_table(bench_rows or [])
    for name, (key, ylabel, title, smooth) in FIGS.items():
        figure_curves(rows, tasks, variants, key, ylabel, out / "figures" / f"{name}.png", title, smooth)
    runs = json.loads(Path(runs_json).read_text())
    table["MLflow"] = [mlflow_views.row_links(runs, vid) for vid in table["variant"]]
    runs_df = pd.DataFrame(runs["runs"])
    divs = list(dict.fromkeys([v["divergence"] for v in variants.values()] + DIVERGENCES.fixed_names()))
    k = int(df["k"].iloc[0])
    meta = {**provenance(settings), "config_hash": cfg_hash}
    sections = [
        (f"Main results: best checkpoint by validation (avg@{k} %, mean ± 95% CI over {len(seeds)} seed(s); "
         "greedy %)", table,
         "Each run's checkpoint with the highest validation avg@k at temperature 1 over its validated steps >= 1 "
         "(ties: the earlier step), chosen in training from the validation split alone, then scored on the test "
         "split by lm-eval; 'best step' lists the chosen step of each seed. Teacher and SFT-init rows: one "
         "evaluation, interval ±1.96 stderr. A variant whose mean avg@k falls below the SFT-init row is flagged "
         f"(collapsed). MLflow links open the UI of `make mlflow-ui` ({mlflow_views.DEFAULT_UI}): a row's runs "
         "per seed, the task's OPD-vs-OPD+ curves and compare page."),
        (f"Final checkpoints (avg@{k} %, mean ± 95% CI over {len(seeds)} seed(s); greedy %)", final,
         "The same runs at their last step (final/)."),
        *([("Self-teacher with and without the privileged context (avg@k %, ± 1.96 stderr; greedy %)",
            self_teacher_table(df, groups),
            "Self-distillation (OPSD): the teacher is the group's own SFT-init checkpoint, frozen, given the "
            "reference solution in its prompt; the student never sees it. In the main table the group's teacher "
            "row is that self-teacher, evaluated with the reference solution in the test prompts.")]
          if groups else []),
        *([("Math benchmarks (avg@k %, mean ± 95% CI over seeds; greedy %; graded by math-verify)", bench, "")]
          if len(bench) else []),
        ("Training curves", ["curves", "greedy", "sampled"],
         "Validation avg@k at temperature 1 (the selection metric) and greedy accuracy vs step, and the accuracy "
         "of the training rollouts sampled at temperature 1 (the quantity avg@k measures), mean over seeds."),
        ("Diagnostics", ["grad_norm", "log_ratio", "length", "bias"],
         "Bias meter: cosine between the design's expected sampled-token gradient and the exact gradient of "
         "sum_n D_f(q||p) at the visited prefixes (1 = unbiased)."),
        ("Advantage formulas (Table 1)", formulas_table(divs), ""),
        ("Wall time per stage (s)", stage_times(Path(benchmarks)), ""),
        (f"Runs read back from MLflow ({runs['experiment']}, {runs['uri']})", runs_df, ""),
    ]
    md, html = _render(settings["study"], meta, sections, out)
    atomic_write_text(out / "report.md", md)
    atomic_write_text(out / "report.html", html)
    return {"table": table.to_dict(orient="records"), "final_table": final.to_dict(orient="records"),
            "collapsed": {f"{t}/{v}": c for (t, v), c in collapsed.items()},
            "final_collapsed": {f"{t}/{v}": c for (t, v), c in final_collapsed.items()}}


def _html_links(html: str) -> str:
    """Markdown links and line breaks inside table cells, as HTML (pandas escaped them)."""
    html = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r"<a href='\2'>\1</a>", html)
    return html.replace("&lt;br&gt;", "<br>")


def _render(study, meta, sections, out: Path) -> tuple[str, str]:
    head = (f"Study `{study}` — config hash `{meta['config_hash']}`, code `{meta['code_version']}`, "
            f"torch {meta['packages']['torch']}, transformers {meta['packages']['transformers']}, "
            f"lm-eval {meta['packages']['lm_eval']}, mlflow {meta['packages']['mlflow']}")
    md = [f"# opdpipe report: {study}", "", head, ""]
    html = [f"<html><head><meta charset='utf-8'><title>opdpipe report: {study}</title>",
            "<style>body{font-family:sans-serif;max-width:1200px;margin:auto} table{border-collapse:collapse;"
            "font-size:13px} td,th{border:1px solid #ccc;padding:3px 6px}</style></head><body>",
            f"<h1>opdpipe report: {study}</h1><p>{head}</p>"]
    for title, content, note in sections:
        md += [f"## {title}", ""]
        html.append(f"<h2>{title}</h2>")
        if isinstance(content, pd.DataFrame):
            escaped = content.map(lambda x: x.replace("|", "\\|") if isinstance(x, str) else x)
            md += [escaped.to_markdown(index=False) if len(content) else "(none)", ""]
            html.append(_html_links(content.to_html(index=False, na_rep="")))
        else:
            for name in [content] if isinstance(content, str) else content:
                md += [f"![{name}](figures/{name}.png)", ""]
                data = base64.b64encode((out / "figures" / f"{name}.png").read_bytes()).decode()
                html.append(f"<img src='data:image/png;base64,{data}' style='max-width:100%'>")
        if note:
            md += [note, ""]
            html.append(f"<p><i>{note}</i></p>")
    html.append("</body></html>")
    return "\n".join(md), "\n".join(html)
