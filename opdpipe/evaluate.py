"""Benchmarking a saved checkpoint with lm-evaluation-harness.

Renders the task YAMLs (with the absolute path of the test file) and a copy of the thin
``utils.py`` into ``<out>/lmeval_tasks/``, runs ``lm_eval.simple_evaluate`` on the CPU and writes
one JSON to a fixed path: greedy accuracy and avg@k with their stderr, sample counts and the
per-sample outputs. The same numbers come out of the plain CLI:

    lm_eval --model hf --model_args pretrained=<checkpoint>,dtype=float32 --device cpu \
        --include_path <out>/lmeval_tasks --tasks opd_<task>_greedy,opd_<task>_avg<k> \
        --batch_size <eval.batch_size> --seed <seed>
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path

import torch

from opdpipe.provenance import atomic_write_json, provenance

TEMPLATES = Path(__file__).parent / "lmeval_tasks"


def render_tasks(task: str, data_file: str | Path, k: int, max_gen_toks: int, dest: str | Path,
                 until: tuple[str, ...] = ("\n",)) -> list[str]:
    """``until``: stop strings (the embedded tasks stop at a newline; long-form math at EOS only)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    fields = {"task": task, "data_file": str(Path(data_file).resolve()), "k": k, "max_gen_toks": max_gen_toks,
              "until": json.dumps(list(until))}
    for tmpl in ("greedy", "sampled"):
        text = (TEMPLATES / f"{tmpl}.yaml.tmpl").read_text().format(**fields)
        (dest / f"opd_{task}_{tmpl}.yaml").write_text(text)
    shutil.copy(TEMPLATES / "utils.py", dest / "utils.py")
    return [f"opd_{task}_greedy", f"opd_{task}_avg{k}"]


def _metric(res: dict, name: str) -> tuple[float, float]:
    key = next(k for k in res if k.startswith(name + ",") and "stderr" not in k)
    err = res.get(key.replace(",", "_stderr,", 1))
    return float(res[key]), float(err) if isinstance(err, (int, float)) else float("nan")


def lm_arguments(checkpoint: str | Path, chat: dict | None, dtype: str, device: str) -> dict:
    """model_args and apply_chat_template of simple_evaluate. The embedded default (no chat, float32,
    CPU) keeps its plain string; a chat template goes through lm-eval's own `apply_chat_template`
    with the same keyword arguments as opdpipe.backends.chat.render_prompt."""
    from opdpipe.backends.chat import check_chat
    from opdpipe.backends.device import resolve_device

    chat = check_chat(chat)
    dev = str(resolve_device(device, "eval"))
    if chat["template"] == "none" and dtype == "float32" and dev == "cpu":
        return {"model_args": f"pretrained={Path(checkpoint).resolve()},dtype=float32", "device": "cpu"}
    args = {"pretrained": str(Path(checkpoint).resolve()), "dtype": dtype,
            "chat_template_args": chat["kwargs"]}
    return {"model_args": args, "device": dev, "apply_chat_template": chat["template"] == "auto"}


@contextlib.contextmanager
def no_environment_report():
    """simple_evaluate ends by storing torch's environment report in its results, and collecting it
    starts pip, gcc, lscpu and more in subprocesses: about 1 s per call here, a fifth of a small
    model's evaluation after the first in a process. opdpipe keeps none of it (its outputs carry
    their own provenance: package versions, config hash, seed), so inside this block the report is
    a fixed note; no number changes."""
    from torch.utils import collect_env

    real = collect_env.get_pretty_env_info
    collect_env.get_pretty_env_info = lambda: "not collected: see the opdpipe provenance of this output"
    try:
        yield
    finally:
        collect_env.get_pretty_env_info = real


def run(checkpoint: str | Path, task: str, data_file: str | Path, out_json: str | Path, k: int = 8,
        max_gen_toks: int = 48, batch_size: int = 64, limit: int | None = None, seed: int = 0,
        threads: int = 1, label: str = "", until: tuple[str, ...] = ("\n",), chat: dict | None = None,
        dtype: str = "float32", device: str = "cpu") -> dict:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(threads)
    if not (Path(checkpoint) / "config.json").exists():
        raise FileNotFoundError(f"no checkpoint at {checkpoint}: run the stage that produces it first")
    import lm_eval
    from lm_eval.tasks import TaskManager

    out_json = Path(out_json)
    task_dir = out_json.parent / "lmeval_tasks"
    names = render_tasks(task, data_file, k, max_gen_toks, task_dir, until)
    t0 = time.perf_counter()
    with no_environment_report():
        res = lm_eval.simple_evaluate(
            model="hf", **lm_arguments(checkpoint, chat, dtype, device), tasks=names,
            batch_size=batch_size, limit=limit, log_samples=True,
            task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
            random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed)
    wall = time.perf_counter() - t0
    greedy, sampled = res["results"][names[0]], res["results"][names[1]]
    acc, acc_se = _metric(greedy, "acc")
    avg, avg_se = _metric(sampled, "avg_at_k")
    pass_k, _ = _metric(sampled, "pass_at_k")
    samples = [{"doc_id": s["doc_id"], "id": s["doc"]["id"], "prompt": s["doc"]["prompt"],
                "answer": s["doc"]["answer"], "greedy": g["filtered_resps"][0], "greedy_correct": g["acc"],
                "samples": s["filtered_resps"][0], "avg_at_k": s["avg_at_k"],
                **({"context": g["arguments"][0][0]} if chat and chat.get("template") == "auto" else {})}
               for g, s in zip(res["samples"][names[0]], res["samples"][names[1]])]
    out = {"label": label, "task": task, "checkpoint": str(checkpoint), "k": k,
           "greedy_acc": acc, "greedy_acc_stderr": acc_se, "avg_at_k": avg, "avg_at_k_stderr": avg_se,
           "pass_at_k": pass_k, "n_samples": len(samples), "wall_s": wall, "lm_eval_tasks": names,
           "lm_eval_version": res.get("lm_eval_version"), "samples": samples,
           **provenance({"checkpoint": str(checkpoint), "task": task, "k": k, "limit": limit}
                         | ({"chat": chat, "dtype": dtype, "device": device} if chat or (dtype, device) != ("float32", "cpu") else {}),
                         seed)}
    atomic_write_json(out_json, out)
    return out


def run_best(best_dir: str | Path, summary_json: str | Path, final_json: str | Path, out_json: str | Path,
             label: str = "", **kw) -> dict:
    """lm-eval of a run's best-by-validation checkpoint (the choice is in its summary.json, made in
    training from the validation split alone). When the best step is the last one, best/ holds the
    final weights: final's evaluation (`final_json`) is reused rather than paid for twice, and says so.
    `kw`: the arguments of `run` after `out_json`."""
    chosen = json.loads(Path(summary_json).read_text())["best"]
    if chosen["is_final"]:
        out = {**json.loads(Path(final_json).read_text()), "label": f"{label} best", "checkpoint": str(best_dir),
               "reused_from": str(final_json),
               "note": f"the best step by validation ({chosen['step']}) is the final step: this is final/'s "
                       "evaluation, reused (best/ holds the same weights)"}
    else:
        out = run(best_dir, out_json=out_json, label=f"{label} best", **kw)
    out["best"] = chosen
    atomic_write_json(out_json, out)
    return out
