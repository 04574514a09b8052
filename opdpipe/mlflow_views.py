"""What a reviewer opens in the MLflow UI: saved views of a study's runs and the URLs that reach them.

How MLflow 3.17's UI (the React app under mlflow/server/js/build) keeps a runs page's state:
- the URL's search params hold the search facets (`searchFilter`, `orderByKey`, `orderByAsc`,
  `startTime`, `lifecycleFilter`, ...), the tab mode (`compareRunsMode` = TABLE | CHART) and the
  sidebar's workflow type (`workflowType` = genai | machine_learning);
- columns, group-by, charts and run visibility live in the browser's local storage, except when a
  view is *shared*: an experiment tag `mlflow.sharedViewState.<key>` holds that state as JSON and
  `?viewStateShareKey=<key>` opens it (the URL must then carry no search facet of its own);
- the experiment tag `mlflow.experimentKind` (`custom_model_development` = "Machine learning") marks
  an experiment as model training. In 3.17 the UI reads the kind from the sidebar's workflow type
  (URL `workflowType`, else local storage, default genai) and not from the tag, so a fresh browser
  lands on the GenAI overview unless the URL says `workflowType=machine_learning`: every URL here does.

The views are plain data (tested without a server); `publish` writes them as experiment tags.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from urllib.parse import urlencode

EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"  # = model training
SHARED_VIEW_TAG = "mlflow.sharedViewState."
NOTE_TAG = "mlflow.note.content"
DEFAULT_UI = "http://127.0.0.1:5000"
WORKFLOW = "machine_learning"

# what a reviewer compares, in this column order: run identity, evaluation, bias meter
# (the rest -- divergence, design, stderr of greedy, other bias readings, params -- is one "Columns" click away)
TAG_COLUMNS = ["variant", "seed", "collapsed", "task"]
# eval_best/: the best-by-validation checkpoint (the report's main table), eval/: final/; four metric columns keep
# the tags in view on a laptop-wide window (stderrs and best/step are one "Columns" click away)
METRIC_COLUMNS = ["eval_best/avg_at_k", "eval/avg_at_k", "eval/greedy_acc", "bias_summary/cos_expected_mean"]
CURVES = ["val/avg_at_k", "val/greedy_acc", "rollout/acc", "bias/cos_expected", "loss"]  # the chart view's cards, in order


def column(kind: str, name: str) -> str:
    """The UI's canonical column key, e.g. tags.`task` (as its makeCanonicalSortKey spells it)."""
    return f"{kind}.`{name}`"


def _quote(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


def task_filter(task: str | None = None, runs_only: bool = False) -> str:
    """An MLflow search filter: the study's child runs (every one carries a task tag)."""
    parts = [f"tags.task = {_quote(task)}" if task else "tags.task LIKE '%'"]
    if runs_only:
        parts.append("tags.kind = 'run'")
    return " AND ".join(parts)


def _group(*tags: str) -> dict:
    return {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": t} for t in tags]}


def _charts(curves: list[str]) -> tuple[list[dict], list[dict]]:
    """Line-chart cards (the fields of the UI's RunsChartsLineCardConfig) in one section, in order."""
    section = {"uuid": "opdpipe-curves", "name": "Training curves", "display": True, "isReordered": True,
               "deleted": False, "isGenerated": False}
    cards = [{"uuid": f"opdpipe-curve-{i}", "type": "LINE", "metricKey": key, "selectedMetricKeys": [key],
              "displayName": key, "xAxisKey": "step", "selectedXAxisMetricKey": "", "xAxisScaleType": "linear",
              "scaleType": "linear", "lineSmoothness": 0, "yAxisKey": "metric", "yAxisExpressions": [],
              "ignoreOutliers": False, "useGlobalXaxisKey": False, "useGlobalLineSmoothing": False,
              "range": {}, "runsCountToCompare": 100, "metricSectionId": section["uuid"], "deleted": False,
              "isGenerated": False}
             for i, key in enumerate(curves)]
    return cards, [section]


def view_state(name: str, task: str | None = None) -> dict:
    """The shared state of one named view: search facets plus the UI state MLflow restores."""
    selected = [column("metrics", m) for m in METRIC_COLUMNS] + [column("tags", t) for t in TAG_COLUMNS]
    run_col = column("attributes", "Run Name")
    base = {"searchFilter": task_filter(task), "orderByKey": column("tags", "mlflow.runName"), "orderByAsc": True,
            "selectedColumns": selected, "runsHiddenMode": "SHOW_ALL",
            # widths apply to the columns listed in columnOrder (the UI's applyColumnState)
            "columnOrder": ["0", run_col, "runDateAndNestInfo", "duration", *selected],
            "columnWidths": {run_col: 260, column("tags", "variant"): 160, **{column("metrics", m): 130 for m in METRIC_COLUMNS}},
            "useGroupedValuesInCharts": True, "hideEmptyCharts": True}
    if name == "runs":
        return base
    if name == "by_variant":
        return {**base, "groupBy": _group("task", "variant")}
    if name == "curves":
        cards, sections = _charts(CURVES)
        return {**base, "searchFilter": task_filter(task, runs_only=True), "groupBy": _group("variant"),
                "compareRunCharts": cards, "compareRunSections": sections, "isAccordionReordered": True}
    raise ValueError(f"view: unknown {name!r}; valid: runs, by_variant, curves")


def share_key(name: str, task: str | None = None) -> str:
    return f"opdpipe-{name}" + (f"-{task}" if task else "")


def views(tasks: list[str]) -> dict[str, tuple[str, dict, str]]:
    """key -> (share key, state, compareRunsMode) for every view of a study."""
    out = {"runs": (share_key("runs"), view_state("runs"), "TABLE"),
           "by_variant": (share_key("by_variant"), view_state("by_variant"), "TABLE")}
    for task in tasks:
        out[f"curves/{task}"] = (share_key("curves", task), view_state("curves", task), "CHART")
    return out


def runs_page(experiment_id: str, key: str, mode: str) -> str:
    """A URL fragment (after the UI's base) opening one shared view of the runs page."""
    query = urlencode({"viewStateShareKey": key, "compareRunsMode": mode, "workflowType": WORKFLOW})
    return f"#/experiments/{experiment_id}/runs?{query}"


def compare_page(experiment_id: str, run_ids: list[str]) -> str:
    """The compare-runs page (params, metrics and their plots side by side) of the given runs."""
    query = urlencode({"runs": json.dumps(run_ids, separators=(",", ":")), "experiments": json.dumps([experiment_id]),
                       "workflowType": WORKFLOW})
    return f"#/compare-runs?{query}"


def links(experiment_id: str, tasks: list[str], rows: list[dict]) -> dict[str, str]:
    """Every URL fragment a reviewer needs, by name: the views, each task's compare page, each run."""
    out = {name: runs_page(experiment_id, key, mode) for name, (key, _, mode) in views(tasks).items()}
    out["experiment"] = f"#/experiments/{experiment_id}?workflowType={WORKFLOW}"
    for task in tasks:
        ids = [r["run_id"] for r in rows if r["task"] == task and r.get("seed") not in (None, "None")]
        out[f"compare/{task}"] = compare_page(experiment_id, ids)
    for r in rows:
        out[f"run/{r['run_name']}"] = f"#/experiments/{experiment_id}/runs/{r['run_id']}?workflowType={WORKFLOW}"
    return out


def note(links_: dict[str, str], tasks: list[str], limit: int = 20000) -> str:
    """The experiment's description (markdown): the same views, two clicks from the experiment page
    (expand it, follow a link). Compare links are left out if they would pass MLflow's 20,000-character
    limit on an experiment tag (a study of hundreds of runs)."""
    head = ["**opdpipe study views**", "", f"- [runs table]({links_['runs']})",
            f"- [runs grouped by task and variant (mean over seeds)]({links_['by_variant']})"]
    full = head + [f"- {task}: [OPD vs OPD+ training curves]({links_[f'curves/{task}']}), "
                   f"[compare page]({links_[f'compare/{task}']})" for task in tasks]
    short = head + [f"- {task}: [OPD vs OPD+ training curves]({links_[f'curves/{task}']})" for task in tasks]
    return "\n".join(full) if len("\n".join(full)) <= limit else "\n".join(short)


def publish(client, experiment_id: str, tasks: list[str], rows: list[dict]) -> dict[str, str]:
    """Write the experiment kind, the shared views and the description; returns the URL fragments."""
    client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    for key, state, _ in views(tasks).values():
        client.set_experiment_tag(experiment_id, SHARED_VIEW_TAG + key, json.dumps(state, sort_keys=True))
    out = links(experiment_id, tasks, rows)
    client.set_experiment_tag(experiment_id, NOTE_TAG, note(out, tasks))
    return out


def row_links(runs: dict, variant: str, base: str = DEFAULT_UI) -> str:
    """The report's MLflow cell for one row of its main table (markdown): per task, the row's run(s)
    (one per seed), the task's OPD-vs-OPD+ curves and its compare page."""
    base, fragments, cells = base.rstrip("/") + "/", runs["links"], []
    for task in runs["tasks"]:
        mine = sorted((r for r in runs["runs"] if r["task"] == task and r["variant"] == variant),
                      key=lambda r: r["run_name"])
        seeds = " ".join(f"[{'run' if r.get('seed') in (None, 'None') else 's' + str(r['seed'])}]"
                         f"({base}{fragments['run/' + r['run_name']]})" for r in mine)
        cells.append(f"{task}: {seeds} · [curves]({base}{fragments['curves/' + task]}) · "
                     f"[compare]({base}{fragments['compare/' + task]})")
    return "<br>".join(cells)


def describe(runs_json: str | Path, base: str = DEFAULT_UI) -> str:
    """What `make mlflow-ui` prints: the URLs that matter, from tracking/runs.json."""
    runs = json.loads(Path(runs_json).read_text())
    fragments, tasks = runs["links"], runs["tasks"]
    base = base.rstrip("/") + "/"
    named = [("experiment page", "experiment"), ("runs table", "runs"), ("runs grouped by variant", "by_variant")]
    for task in tasks:
        named += [(f"{task}: OPD vs OPD+ curves", f"curves/{task}"), (f"{task}: compare page", f"compare/{task}")]
    lines = [f"MLflow UI for experiment {runs['experiment']} (Ctrl-C stops it):"]
    lines += [f"  {label:<30}{base}{fragments[key]}" for label, key in named]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Print the MLflow UI addresses of a study's views.")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="the study's config (its runs.json is found through opdpipe.layout)")
    src.add_argument("--runs-json", help="a study's tracking/runs.json")
    ap.add_argument("--port", type=int, default=5000, help="the port of the UI on 127.0.0.1 (default 5000)")
    args = ap.parse_args(argv)
    if not 0 < args.port < 65536:
        ap.error(f"--port = {args.port}: a TCP port is 1..65535")
    runs_json = args.runs_json
    if args.config:
        from opdpipe.config import ConfigError, load
        from opdpipe.layout import Layout

        try:
            runs_json = Layout.for_study(load(args.config)["study"]).tracking_file("runs.json")
        except (ConfigError, ValueError) as err:
            print(err, file=sys.stderr)
            return 2
    if not Path(runs_json).exists():
        print(f"{runs_json}: missing; run the study first (make reproduce)", file=sys.stderr)
        return 2
    print(describe(runs_json, f"http://127.0.0.1:{args.port}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
