"""Data preparation: train / validation / test JSONL per task plus a manifest.

Synthetic tasks are generated test-first so that no test prompt can occur in validation or
train. Real sources go through the adapters in ``opdpipe.tasks.real`` and are split by a seeded
shuffle, dropping train/validation records whose prompt is also in test.
"""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from opdpipe.provenance import atomic_write_json, atomic_write_text, provenance, sha256_file
from opdpipe.tasks import get_task
from opdpipe.tasks.real import ADAPTERS

SPLITS = ("test", "validation", "train")
GENERATOR_VERSION = 1


def check_sizes(task: str, spec: dict) -> None:
    """Fail before any work when a synthetic generator cannot make the requested unique sizes."""
    sizes = spec["sizes"]
    for split in SPLITS:
        if not isinstance(sizes.get(split), int) or sizes[split] < 1:
            raise ValueError(f"tasks.{task}.sizes.{split}: must be a positive integer, got {sizes.get(split)!r}")
    if spec.get("source", "synthetic") == "synthetic":
        cap = get_task(task).capacity(**spec.get("knobs", {}))
        total = sum(sizes[s] for s in SPLITS)
        if total > cap:
            raise ValueError(f"tasks.{task}.sizes: {total} examples asked for, but the generator with knobs "
                             f"{spec.get('knobs', {})} guarantees only {cap} distinct prompts")


def make_splits(task: str, spec: dict, seed: int) -> dict[str, list[dict]]:
    sizes, source = spec["sizes"], spec.get("source", "synthetic")
    if source == "synthetic":
        gen, seen, out = get_task(task).generate, set(), {}
        for k, split in enumerate(SPLITS):
            out[split] = gen(sizes[split], seed * 1000 + k, exclude=seen, **spec.get("knobs", {}))
            seen |= {e["prompt"] for e in out[split]}
        return out
    if source not in ADAPTERS:
        raise ValueError(f"tasks.{task}.source: unknown {source!r}; allowed: synthetic, {', '.join(ADAPTERS)}")
    records = ADAPTERS[source](spec["path"], spec.get("split", "train"))
    random.Random(seed).shuffle(records)
    test = records[:sizes["test"]]
    test_prompts = {e["prompt"] for e in test}
    rest = [e for e in records[sizes["test"]:] if e["prompt"] not in test_prompts]
    return {"test": test, "validation": rest[:sizes["validation"]],
            "train": rest[sizes["validation"]:sizes["validation"] + sizes["train"]]}


def run(task: str, spec: dict, seed: int, out_dir: str | Path) -> dict:
    """Write <out_dir>/{train,validation,test}.jsonl and manifest.json; return the manifest."""
    get_task(task)
    check_sizes(task, spec)
    out_dir = Path(out_dir)
    splits = make_splits(task, spec, seed)
    manifest = {"task": task, "spec": spec, "generator_version": GENERATOR_VERSION, "splits": {},
                **provenance({"task": task, "spec": spec}, seed)}
    for split, rows in splits.items():
        path = out_dir / f"{split}.jsonl"
        atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        manifest["splits"][split] = {"count": len(rows), "sha256": sha256_file(path)}
    overlap = {e["prompt"] for e in splits["test"]} & {e["prompt"] for e in splits["train"]}
    if overlap:
        raise AssertionError(f"{task}: {len(overlap)} test prompt(s) also in train")
    atomic_write_json(out_dir / "manifest.json", manifest)
    return manifest


def read_jsonl(path: str | Path) -> list[dict]:
    """Rows of a JSON Lines file; a malformed line raises ValueError naming the file and the line."""
    rows = []
    with open(path) as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: line {i} is not valid JSON ({err.msg}): {line[:80]!r}") from None
    return rows


def load_split(data_dir: str | Path, split: str, log=print) -> list[dict]:
    """One split of a prepared task, checked against the sha256 in its manifest.

    A synthetic split that was changed or damaged after the data stage wrote it is set aside
    (``<split>.jsonl.corrupt.<n>``) and regenerated from the manifest's spec and seed (deterministic: the
    result must match the manifest again). A real-data split is not regenerated: the error names it.
    """
    data_dir = Path(data_dir)
    path, manifest = data_dir / f"{split}.jsonl", json.loads((data_dir / "manifest.json").read_text())
    want = manifest["splits"][split]["sha256"]
    if path.exists() and sha256_file(path) == want:
        return read_jsonl(path)
    if manifest["spec"].get("source", "synthetic") != "synthetic":
        raise ValueError(f"{path} is missing or does not match its manifest (sha256 {want[:12]}...); it was changed "
                         "after the data stage wrote it: delete the folder to prepare the data again")
    _set_aside(path, log)
    rows = make_splits(manifest["task"], manifest["spec"], manifest["seed"])[split]
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    if hashlib.sha256(text.encode()).hexdigest() != want:
        raise ValueError(f"{path}: regenerated split does not match its manifest; the generator changed "
                         f"(version {GENERATOR_VERSION}); delete {data_dir} to prepare the data again")
    atomic_write_text(path, text)
    log(f"{path} regenerated from its manifest")
    return rows


def _set_aside(path: Path, log) -> None:
    n = 0
    while path.with_name(f"{path.name}.corrupt.{n}").exists():
        n += 1
    try:
        path.rename(path.with_name(f"{path.name}.corrupt.{n}"))
        log(f"warning: {path} does not match its manifest (changed or damaged); moved to "
            f"{path.name}.corrupt.{n}")
    except FileNotFoundError:  # missing, or another job set it aside first
        pass
