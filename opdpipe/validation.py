"""Validation during training, and the best checkpoint chosen by it (never by the test split).

Every `eval_every` steps (and at step 0 and the last step) the trainer measures, on the first
`eval_size` validation prompts: greedy accuracy and the sampled accuracy avg@k at temperature 1
(k = `val_k` samples per prompt, the metric of the results table). The samples come from a
generator of their own, seeded from the run's seed alone and re-seeded at every validation: the
training generators are never consumed (the training trajectory is the same with or without
validation), a resumed run measures the same numbers, and every step is measured with the same
random draws (common random numbers: differences between steps are the model's, not the draw's).

The best checkpoint is the validated step >= 1 with the highest avg@k (ties: the earlier step);
step 0, the SFT-init student itself, is measured for the curve but is never a candidate. Its weights
live in ``<run>/work/best/step_<n>/`` while training (written atomically, kept for as long as a
kept resumable checkpoint may need them) and end in ``<run>/best/``.
"""
from __future__ import annotations

import hashlib
import math
import shutil
from contextlib import nullcontext
from pathlib import Path

import torch

from opdpipe.generation import decode_responses, greedy_accuracy, sample
from opdpipe.provenance import atomic_dir

VAL_KEY = "val/avg_at_k"   # the selection metric, in metrics.jsonl and MLflow
GREEDY_KEY = "val/greedy_acc"
BEST = "best"              # <run>/best/ (final) and <run>/work/best/step_<n>/ (while training)
RULE = "highest validation avg@k at temperature 1 over the validated steps >= 1; ties: the earlier step"


def validation_seed(run_seed: int) -> int:
    """A seed for validation sampling, apart from every training generator (63 bits)."""
    return int.from_bytes(hashlib.sha256(f"opdpipe/validation/{run_seed}".encode()).digest()[:8], "big") >> 1


# ---------------------------------------------------------------- measuring
def sampled_accuracy(model, tok, examples: list[dict], score, max_new_tokens: int, k: int,
                     generator: torch.Generator, encode=None, batch_prompts: int = 64) -> float:
    """avg@k at temperature 1: the mean score of k samples per example (no truncation)."""
    correct = 0.0
    for i in range(0, len(examples), batch_prompts):
        chunk = examples[i:i + batch_prompts]
        ids = encode([e["prompt"] for e in chunk]) if encode else [tok(e["prompt"])["input_ids"] for e in chunk]
        roll = sample(model, [x for x in ids for _ in range(k)], max_new_tokens, tok.eos_token_id,
                      tok.pad_token_id, generator=generator)  # k consecutive rows per prompt
        texts = decode_responses(tok, roll)
        correct += sum(score(t, e["answer"]) for t, e in zip(texts, [e for e in chunk for _ in range(k)]))
    return correct / max(len(examples) * k, 1)


def measure(state, cfg: dict, seed: int) -> dict:
    """Greedy accuracy and avg@val_k of the student on the validation prompts (rank 0, eval mode)."""
    rt = state.runtime
    encode = None if rt is None else (lambda texts: rt.encode(state.tok, texts))
    device = next(state.student.parameters()).device
    gen = torch.Generator(device=device).manual_seed(validation_seed(seed))
    per_batch = max(1, (cfg["rollout_batch_size"] or 64 * cfg["val_k"]) // cfg["val_k"])
    with rt.autocast() if rt is not None else nullcontext():  # both measures in the rollouts' precision
        greedy, _ = greedy_accuracy(state.student, state.tok, state.val, state.score, cfg["max_new_tokens"],
                                    encode=encode)
        avg = sampled_accuracy(state.student, state.tok, state.val, state.score, cfg["max_new_tokens"], cfg["val_k"],
                               gen, encode, per_batch)
    return {GREEDY_KEY: greedy, VAL_KEY: avg}


# ---------------------------------------------------------------- choosing
def improves(step: int, value: float, best: tuple[int, float] | None) -> bool:
    """The rule: a candidate is a validated step >= 1 with a finite value; it replaces the best so far
    only when strictly higher, so a tie keeps the earlier step."""
    return step >= 1 and math.isfinite(value) and (best is None or value > best[1])


def improvements(rows: list[dict]) -> list[tuple[int, float]]:
    """(step, value) each time the validation avg@k beat every earlier candidate; the last one is the best."""
    out: list[tuple[int, float]] = []
    for r in sorted(rows, key=lambda r: r["step"]):
        if VAL_KEY in r and improves(r["step"], r[VAL_KEY], out[-1] if out else None):
            out.append((r["step"], float(r[VAL_KEY])))
    return out


def choose_best(rows: list[dict]) -> tuple[int, float] | None:
    """The best (step, validation avg@k) of a run's metrics rows; None when no step >= 1 was validated."""
    found = improvements(rows)
    return found[-1] if found else None


class Best:
    """The best checkpoint so far: its (step, value) history and its weights under `folder`."""

    def __init__(self, folder: Path, rows: list[dict] = ()):
        self.folder = Path(folder)
        self.history = improvements(list(rows))

    @property
    def current(self) -> tuple[int, float] | None:
        return self.history[-1] if self.history else None

    def dir(self, step: int) -> Path:
        return self.folder / f"step_{step:06d}"

    def reset(self) -> None:
        """A fresh start: no best yet, and no weights left from an earlier attempt."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.history = []

    def consider(self, step: int, value: float, model) -> bool:
        """Keep the model's weights if `value` beats the best so far (strictly). Written before the
        step's metrics line, so a kill in between leaves metrics that never name a missing folder."""
        if not improves(step, value, self.current):
            return False
        with atomic_dir(self.dir(step)) as tmp:
            model.save_pretrained(str(tmp))  # a LoRA student: its adapter (as the resumable checkpoints)
        self.history.append((step, value))
        return True

    def best_at(self, step: int) -> tuple[int, float] | None:
        before = [h for h in self.history if h[0] <= step]
        return before[-1] if before else None

    def prune(self, kept: list[Path]) -> None:
        """After a resumable checkpoint: drop weights no resume can need any more (older than the best
        as of the oldest kept checkpoint; `kept`: the checkpoint folders, step_<n>)."""
        floor = self.best_at(min(_step(c) for c in kept)) if kept else None
        for d in self._dirs():
            if floor is not None and _step(d) < floor[0]:
                shutil.rmtree(d, ignore_errors=True)

    def _dirs(self) -> list[Path]:
        return sorted(self.folder.glob("step_*")) if self.folder.exists() else []


def _step(folder: Path) -> int:
    return int(folder.name.split("_")[1])


def resumable(folder: Path, metrics_path: Path, resumed_step: int, log=print) -> bool:
    """On resume at `resumed_step` (metrics already cut back to it): drop kept weights of later steps
    (they will be measured again, with the same numbers) and check that the best so far is on disk.
    False: the run must start afresh."""
    best = restored(folder, metrics_path, log)
    for d in best._dirs():
        if _step(d) > resumed_step:
            shutil.rmtree(d, ignore_errors=True)
    need = best.current
    if need is not None and not (best.dir(need[0]) / "config.json").exists():
        log(f"warning: the best checkpoint so far (step {need[0]}, validation avg@k {need[1]:.4f}) is missing "
            f"from {folder}; the run restarts from scratch")
        return False
    return True


def restored(folder: Path, metrics_path: Path | None, log=print) -> Best:
    """The best so far of a resumed run, from its streamed metrics (None: a fresh start)."""
    from opdpipe.checkpoints import read_stream

    return Best(folder, read_stream(metrics_path, log) if metrics_path is not None and metrics_path.exists() else ())


def finish(best: Best, out: Path, final_step: int, load, save) -> dict:
    """Write <out>/best/ (a copy of final/ when the best step is the last one) and return the summary's
    record of the choice. `load(folder)` reads kept weights, `save(model, dest)` writes as final/ is."""
    cur = best.current
    if cur is None:
        raise RuntimeError(f"no validated step >= 1 in {out}: cannot choose a best checkpoint")
    step, value = cur
    if step == final_step:
        with atomic_dir(out / BEST) as tmp:
            for f in (out / "final").iterdir():
                _link_or_copy(f, tmp / f.name)
    else:
        save(load(best.dir(step)), out / BEST)
    return {"step": step, "value": value, "metric": VAL_KEY, "rule": RULE, "is_final": step == final_step}


def _link_or_copy(src: Path, dst: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dst)
        return
    try:
        dst.hardlink_to(src)  # the same bytes, no second copy of a large model
    except OSError:
        shutil.copy2(src, dst)
