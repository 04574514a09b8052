"""Resumable training state under ``<run>/work/``: checkpoints and the streamed metrics.

A checkpoint is a folder renamed into place once complete (``work/checkpoints/step_<n>/``: the
student's ``save_pretrained`` files and ``trainer_state.pt``); the newest two are kept. On resume,
a checkpoint that cannot be read (truncated, corrupted) is named in the log, moved to
``work/corrupt/`` and the next older one is tried, down to a fresh start. The streamed
``metrics.jsonl`` is cut back to the resumed step; a partial last line (a write cut by a kill) is
dropped, and a file that lacks steps the checkpoint covers is set aside and the run starts afresh.
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import torch

from opdpipe.models import load_model
from opdpipe.provenance import atomic_dir, atomic_write_text

WORK = "work"
KEEP = 2  # checkpoints kept: the newest may be cut by a kill mid-write of a file system without rename
STATE_KEYS = {"step", "optimizer", "scheduler", "generator", "torch_rng", "python_rng"}


def checkpoint_dirs(out: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a folder is renamed into place only once complete)."""
    root = out / WORK / "checkpoints"
    return sorted(c for c in root.glob("step_*") if (c / "trainer_state.pt").exists()) if root.exists() else []


def save(out: Path, student, opt, sched, gen: torch.Generator, step: int, extra: dict | None = None) -> Path:
    """`extra`: more trainer state (a data-parallel run adds every rank's random state, a CUDA rollout
    generator its state); a LoRA student saves its adapter."""
    final = out / WORK / "checkpoints" / f"step_{step:06d}"
    with atomic_dir(final) as tmp:
        student.save_pretrained(str(tmp))
        torch.save({"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
                    "python_rng": random.getstate(), **(extra or {})}, tmp / "trainer_state.pt")
    for old in checkpoint_dirs(out)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_latest(out: Path, log=print, load=load_model):
    """(student model, trainer state, folder) of the newest readable checkpoint, or None.

    `load(folder)` reads the student (a LoRA student: base + saved adapter). Unreadable checkpoints
    are set aside in work/corrupt/ with the reason in the log."""
    for ckpt in reversed(checkpoint_dirs(out)):
        try:
            state = torch.load(ckpt / "trainer_state.pt", weights_only=True)
            missing = STATE_KEYS - set(state)
            if missing:
                raise ValueError(f"trainer_state.pt lacks {sorted(missing)}")
            model = load(ckpt)
            _check_weights(model)
            return model, state, ckpt
        except Exception as err:  # noqa: BLE001 - any failure to read means: not a usable checkpoint
            aside = set_aside(ckpt, out / WORK / "corrupt")
            log(f"warning: checkpoint {ckpt} is unreadable ({type(err).__name__}: {str(err)[:200]}); "
                f"moved to {aside}, trying an older one")
    return None


def _check_weights(model) -> None:
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise ValueError(f"weight {name} is not finite")


def set_aside(path: Path, folder: Path) -> Path:
    """Move `path` into `folder` under a fresh name (never overwriting an earlier casualty)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    while (folder / f"{path.name}.{n}").exists():
        n += 1
    path.rename(folder / f"{path.name}.{n}")
    return folder / f"{path.name}.{n}"


def read_stream(path: Path, log=print) -> list[dict]:
    """Rows of a streamed JSONL file; a partial last line (cut by a kill) is dropped with a warning.
    A bad line before the last raises ValueError naming the file and line."""
    lines = path.read_text().split("\n")
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if any(x.strip() for x in lines[i + 1:]):
                raise ValueError(f"{path}: line {i + 1} is not valid JSON: {line[:80]!r}") from None
            log(f"warning: {path}: dropped a partial last line ({len(line)} characters, cut by a kill)")
    return rows


def restore_metrics(path: Path, upto: int, log=print) -> bool:
    """Keep the streamed metrics of steps <= upto. False (file set aside) if any of 0..upto is missing
    or the file is damaged, in which case the run must start afresh."""
    if upto == 0 and not path.exists():
        return True
    try:
        rows = [r for r in read_stream(path, log) if r["step"] <= upto] if path.exists() else []
    except (ValueError, KeyError, TypeError) as err:
        log(f"warning: streamed metrics unreadable ({err})")
        rows = None
    if rows is None or sorted(r["step"] for r in rows) != list(range(upto + 1)):
        if path.exists():
            aside = set_aside(path, path.parent / "corrupt")
            log(f"warning: {path} does not hold every step up to {upto}; moved to {aside}")
        return False
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return True


def discard_all(out: Path, log=print) -> None:
    """Set every checkpoint aside: the run starts from the SFT-init student."""
    for ckpt in checkpoint_dirs(out):
        log(f"warning: {ckpt} set aside, the run restarts from scratch")
        set_aside(ckpt, out / WORK / "corrupt")
