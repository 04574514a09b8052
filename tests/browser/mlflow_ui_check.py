"""Browser check of the MLflow UI over a finished study, as a reviewer sees it.

Starts `mlflow server` on the study's store (127.0.0.1, a free port), opens the views that
`make mlflow-ui` prints in headless Chromium (installed with apt-get where missing), asserts from the
rendered page that the study's runs are listed with their variant and avg@k, grouped by variant
with the seeds averaged, that the chart view draws the OPD and OPD+ curves of one task and that the
compare page shows that task's runs; saves a screenshot of each page; stops the server by its PID.

    python tests/browser/mlflow_ui_check.py --results results/smoke --out results/smoke/ui-check
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cdp import Browser, free_port  # noqa: E402

from opdpipe import mlflow_views, tracking  # noqa: E402

ROWS_JS = """(() => { const rows = {};
  for (const r of document.querySelectorAll('[role=row][row-id]')) {
    const id = r.getAttribute('row-id'); rows[id] = rows[id] || {};
    for (const c of r.querySelectorAll('[role=gridcell][col-id]')) rows[id][c.getAttribute('col-id')] = c.innerText.trim();
  } return rows; })()"""
# the chart view is ready when its first card is drawn (cards below the fold are not in the page
# until scrolled into view)
CARDS_JS = "[...document.querySelectorAll('[data-testid=experiment-view-compare-runs-card]')].map(e => e.innerText)"
CHARTS_READY_JS = (f"(() => {{ const cards = {CARDS_JS}; return cards.length > 0 && cards[0].startsWith("
                   f"{json.dumps(mlflow_views.CURVES[0])}) && document.querySelectorAll('.js-plotly-plot').length >= 1; }})()")
CLOSE_ASSISTANT_JS = """(() => { const b = document.querySelector('[data-component-id="mlflow.assistant.chat_panel.close"]');
  if (b) b.click(); return Boolean(b); })()"""
NAME, VARIANT = mlflow_views.column("attributes", "Run Name"), mlflow_views.column("tags", "variant")
AVG, BIAS = mlflow_views.column("metrics", "eval/avg_at_k"), mlflow_views.column("metrics", "bias_summary/cos_expected_mean")


class Checks:
    def __init__(self):
        self.passed, self.failed = 0, []

    def check(self, ok: bool, what: str) -> None:
        print(("ok   " if ok else "FAIL ") + what, flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed.append(what)


def start_server(db: Path, port: int, log: Path) -> subprocess.Popen:
    mlflow = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{db.resolve()}"]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited ({proc.returncode}); see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    stop_server(proc)
    raise RuntimeError(f"mlflow server not healthy after 120 s; see {log}")


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group of the server this script started (its PID leads it)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _num(text: str | None) -> float:
    try:
        return float((text or "").split()[0])
    except (ValueError, IndexError):
        return math.nan


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


async def check_runs_table(b, c: Checks, url: str, runs: list[dict]) -> dict:
    names = {r["run_name"] for r in runs}
    secs = await b.open(url, f"(() => {{ const t = document.body.innerText; "
                             f"return {json.dumps(sorted(names))}.every(n => t.includes(n)); }})()")
    rows = {cells[NAME].splitlines()[-1]: cells for cells in (await b.evaluate(ROWS_JS)).values() if cells.get(NAME)}
    c.check(names <= set(rows), f"runs table lists all {len(names)} runs of the study ({secs:.1f} s)")
    for r in runs:
        got, bias = rows.get(r["run_name"], {}), r["metrics"].get("bias_summary/cos_expected_mean", math.nan)
        shown_bias = _num(got.get(BIAS)) if got.get(BIAS) != "-" else math.nan
        c.check(got.get(VARIANT) == r["variant"] and _close(_num(got.get(AVG)), r["avg_at_k"])
                and (_close(shown_bias, bias) or math.isnan(shown_bias) and math.isnan(bias)),
                f"runs table: {r['run_name']} shows variant {got.get(VARIANT)!r}, avg@k {got.get(AVG)!r}, "
                f"bias cos {got.get(BIAS)!r} (store: {r['variant']}, {r['avg_at_k']}, {bias:.6g})")
    return rows


async def check_grouped(b, c: Checks, url: str, runs: list[dict]) -> None:
    groups = {}
    for r in runs:
        groups.setdefault((r["task"], r["variant"]), []).append(r["avg_at_k"])
    labels = [f"Group: task: {t}, variant: {v}" for t, v in groups]
    secs = await b.open(url, f"(() => {{ const t = document.body.innerText; "
                             f"return {json.dumps(labels)}.every(n => t.includes(n)); }})()")
    c.check(True, f"grouped view shows {len(groups)} groups task x variant ({secs:.1f} s)")
    rows = await b.evaluate(ROWS_JS)
    for (task, variant), values in groups.items():
        got = rows.get(f"tag.task.{task},tag.variant.{variant}", {}).get(AVG, "")
        mean = sum(values) / len(values)
        c.check("(average)" in got and _close(_num(got), mean),
                f"group {task}/{variant}: avg@k {got!r} = mean over its {len(values)} run(s) {mean:.6g}")


async def check_curves(b, c: Checks, url: str, task: str, variants: list[str]) -> None:
    ready = f"{CHARTS_READY_JS} && {json.dumps(variants)}.every(v => document.body.innerText.includes(v))"
    secs = await b.open(url, ready)
    cards = await b.evaluate(CARDS_JS)
    shown = [card.splitlines()[0] for card in cards]
    c.check(shown == mlflow_views.CURVES[:len(shown)] and len(shown) >= 3,
            f"chart view of {task}: cards in order {shown} of {mlflow_views.CURVES} in view ({secs:.1f} s)")
    first = next((card for card in cards if card.startswith(mlflow_views.CURVES[0])), "")
    c.check(all(f"{v} (" in first for v in variants) and "sft_init" not in first and "teacher" not in first,
            f"chart view of {task}: {mlflow_views.CURVES[0]} has one line per variant {variants}")


async def check_compare(b, c: Checks, url: str, task: str, runs: list[dict]) -> None:
    names = sorted(r["run_name"] for r in runs if r["task"] == task and r["seed"] not in (None, "None"))
    secs = await b.open(url, f"(() => {{ const t = document.body.innerText; "
                             f"return {json.dumps(names)}.every(n => t.includes(n)) && t.includes('eval/avg_at_k'); }})()")
    c.check(True, f"compare page of {task}: its {len(names)} runs and eval/avg_at_k side by side ({secs:.1f} s)")


async def check_two_clicks(b, c: Checks, url: str, experiment_id: str, task: str) -> None:
    """From the experiment's page (what `make mlflow-ui` prints first): click 1 expands the study's
    description, click 2 follows its "OPD vs OPD+ training curves" link of the task. The link opens a
    new tab; the check opens its address in this tab as a new document (via about:blank: the address
    differs from this page's only after '#', which would otherwise be a same-page hash change, not the
    fresh load a new tab is) and waits for the charts."""
    secs = await b.open(url,
                        f"location.hash.startsWith('#/experiments/{experiment_id}/runs') && "
                        "document.body.innerText.includes('opdpipe study views')")
    c.check(True, f"experiment page lands on its runs ({secs:.1f} s)")
    await b.evaluate("document.querySelector('[data-component-id=\"mlflow.experiment.metadata_editor.expand_button\"]').click()")
    link = f"a[href*='{mlflow_views.share_key('curves', task)}&']"
    href = await b.evaluate(f"(() => {{ const a = document.querySelector(\"{link}\"); "
                            f"return a && a.offsetParent !== null && a.innerText.includes('OPD+') ? a.href : null; }})()")
    c.check(bool(href), f"click 1 (expand the description) shows the link {link}")
    if href:
        await b.open("about:blank", "location.href === 'about:blank'")
        secs = await b.open(href, CHARTS_READY_JS)
        c.check(True, f"click 2 opens the OPD vs OPD+ curves of {task} ({secs:.1f} s)")


async def run_checks(base: str, runs_json: dict, out: Path, c: Checks) -> None:
    links, runs, task = runs_json["links"], runs_json["runs"], runs_json["tasks"][0]
    variants = sorted({r["variant"] for r in runs if r["task"] == task and r["seed"] not in (None, "None")})
    async with Browser(shots=out) as b:
        await check_runs_table(b, c, base + links["runs"], runs)
        await b.evaluate(CLOSE_ASSISTANT_JS)  # MLflow opens its assistant on a first visit; a user closes it
        await asyncio.sleep(0.5)
        await b.screenshot(out / "runs.png")
        await check_grouped(b, c, base + links["by_variant"], runs)
        await b.screenshot(out / "by_variant.png")
        await check_curves(b, c, base + links[f"curves/{task}"], task, variants)
        await asyncio.sleep(1.0)  # let plotly finish its transitions before the picture
        await b.screenshot(out / f"curves_{task}.png")
        await check_compare(b, c, base + links[f"compare/{task}"], task, runs)
        await b.screenshot(out / f"compare_{task}.png")
    async with Browser(shots=out) as b:  # a new user: fresh profile, nothing remembered
        await check_two_clicks(b, c, base + links["experiment"], runs_json["experiment_id"], task)


def shrink(src: Path, dst: Path, width: int = 1200) -> None:
    """A small copy for the README: scaled to `width` and reduced to a 256-colour palette."""
    from PIL import Image

    img = Image.open(src).convert("RGB")
    img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
    img.quantize(colors=256).save(dst, optimize=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results/smoke", help="a finished study's results/<study>/")
    ap.add_argument("--out", default=None, help="where the screenshots go (default <results>/ui-check)")
    ap.add_argument("--readme-png", default=None, help="also write the chart view, small, here (docs/mlflow-ui-curves.png)")
    args = ap.parse_args(argv)
    results = Path(args.results)
    runs_path, db = results / "tracking" / "runs.json", results / "mlflow.db"
    for p in (runs_path, db):
        if not p.exists():
            print(f"--results {results}: {p} missing; run the study first", file=sys.stderr)
            return 2
    out = Path(args.out or results / "ui-check")
    out.mkdir(parents=True, exist_ok=True)
    runs_json = json.loads(runs_path.read_text())
    client = tracking.mlflow_client(tracking.default_uri(results))  # the expected values, straight from the store
    for r in runs_json["runs"]:
        r["metrics"] = client.get_run(r["run_id"]).data.metrics
    port, c, t0 = free_port(), Checks(), time.monotonic()
    server = start_server(db, port, out / "mlflow-server.log")
    print(f"mlflow server pid {server.pid} on 127.0.0.1:{port}", flush=True)
    try:
        asyncio.run(run_checks(f"http://127.0.0.1:{port}/", runs_json, out, c))
    except (TimeoutError, RuntimeError) as err:
        c.check(False, str(err))
    finally:
        stop_server(server)
    c.check(server.poll() is not None, f"mlflow server pid {server.pid} stopped")
    if args.readme_png and not c.failed:
        shrink(out / f"curves_{runs_json['tasks'][0]}.png", Path(args.readme_png))
    print(f"screenshots in {out}; {time.monotonic() - t0:.0f} s")
    print(f"{c.passed} passed, {len(c.failed)} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
