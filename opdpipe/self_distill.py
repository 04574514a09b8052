"""On-policy self-distillation (OPSD): the student's own starting model is its teacher.

The paper's third experiment (METHOD.md, section 4): the teacher is the SFT-init checkpoint
itself, frozen, scoring the student's rollouts with a *privileged* prompt that also holds the
reference worked solution; the student's prompts never hold it. In the study this is one more
column group, `opsd`, built on a source task (math):

    data/opsd/{train,validation,test}.jsonl   the source's records + `teacher_prompt` (privileged)
    data/opsd/test_hint.jsonl                 the test split with the privileged prompt as `prompt`
    data/opsd/sft.jsonl                       the source's teacher completions; a share `hint_frac`
                                              of them with the privileged prompt (the SFT-init
                                              must learn to use the hint to be a useful teacher)
    opsd/sft_init/                            that SFT-init: the student AND the self-teacher
    opsd/teacher/eval.json                    the self-teacher's evaluation: SFT-init WITH the hint
    opsd/sft_init/eval.json                   ... and without it; the gap is the headroom OPSD can close

There is no teacher stage: the trainer's `teacher_prompt` hook scores with the privileged prompt.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from opdpipe.data import load_split, read_jsonl
from opdpipe.provenance import atomic_write_json, atomic_write_text, provenance, sha256_file

GROUP = "opsd"  # the group's name in paths, MLflow tags and the report
SOURCES = ("math",)  # tasks whose examples carry a worked reference solution (`target`)
# before the problem, so that the tokens right before the response are the student's own prompt
HINT = "Reference solution: {solution}\n"
SPLITS = ("train", "validation", "test")


def enabled(cfg: dict) -> bool:
    return bool(cfg.get("self_distillation"))


def study_tasks(cfg: dict) -> list[str]:
    """The study's column groups: its tasks, then the self-distillation group where configured."""
    return list(cfg["tasks"]) + ([GROUP] if enabled(cfg) else [])


def group_block(cfg: dict) -> dict:
    """The group as a task block: the source task's budget and opd overrides, then the group's own."""
    sd = cfg["self_distillation"]
    src = cfg["tasks"][sd["source"]]
    return {"max_new_tokens": sd.get("max_new_tokens", src["max_new_tokens"]),
            "opd": {**src.get("opd", {}), **sd.get("opd", {})}, "benchmarks": sd.get("benchmarks", {})}


def task_block(cfg: dict, task: str) -> dict:
    """A task's block, or the self-distillation group's (which has the same keys the trainer reads)."""
    return group_block(cfg) if task == GROUP and enabled(cfg) else cfg["tasks"][task]


def student_block(cfg: dict, task: str) -> dict:
    """The student of a column group: the group's own block where it gives one (the paper: Qwen3-1.7B)."""
    if task == GROUP and enabled(cfg) and cfg["self_distillation"].get("student"):
        return cfg["self_distillation"]["student"]
    return cfg["student"]


def source_task(cfg: dict, task: str) -> str:
    """The registered task that grades a column group's runs (the group's: its source)."""
    return cfg["self_distillation"]["source"] if task == GROUP and enabled(cfg) else task


def teacher_row(task: str) -> str:
    """Which reference checkpoint teaches a column group's runs: its own SFT-init for the group."""
    return "sft_init" if task == GROUP else "teacher"


def models_of(cfg: dict, task: str) -> dict:
    """The config whose teacher / student blocks a column group's runs load (for backend_block): the
    group's own student is its own teacher too."""
    if task == GROUP and enabled(cfg) and cfg["self_distillation"].get("student"):
        return {**cfg, "teacher": cfg["self_distillation"]["student"], "student": cfg["self_distillation"]["student"]}
    return cfg


def check(cfg: dict) -> None:
    """The group's checks that the schema cannot make; ValueError naming the key, value and what is allowed."""
    sd = cfg["self_distillation"]
    src = sd["source"]
    if src not in cfg["tasks"]:
        raise ValueError(f"self_distillation.source = {src!r}: not a task of this study; allowed: "
                         f"{', '.join(t for t in cfg['tasks'] if t in SOURCES) or '(none: add tasks.math)'}")
    if src not in SOURCES:
        raise ValueError(f"self_distillation.source = {src!r}: its examples have no worked reference solution to "
                         f"give the teacher; allowed: {', '.join(SOURCES)}")
    if "student" in sd:
        from opdpipe.backends import lora
        from opdpipe.backends.device import check_device
        from opdpipe.backends.loading import check_source, is_pretrained

        check_source(sd["student"], "self_distillation.student")
        check_device(sd["student"].get("device", "cpu"), "self_distillation.student")
        lora.check_adapter(sd["student"].get("adapter"))
        if is_pretrained(sd["student"]) != is_pretrained(cfg["student"]):
            raise ValueError("self_distillation.student: must be built here (model) like the study's student, or a "
                             "pretrained checkpoint (path / hf_id) like it: the group shares the study's tokenizer")


# ---------------------------------------------------------------- the privileged prompt
def privileged_prompt(example: dict) -> str:
    """What the self-teacher reads: the reference worked solution, then the student's own prompt."""
    return HINT.format(solution=example["target"].strip()) + example["prompt"]


def with_hint(example: dict) -> dict:
    return {**example, "teacher_prompt": privileged_prompt(example)}


def hint_test_records(test: list[dict]) -> list[dict]:
    """The test split as the self-teacher sees it (the privileged prompt is the prompt lm-eval renders)."""
    return [{**e, "prompt": privileged_prompt(e)} for e in test]


def sft_examples(completions: list[dict], train: list[dict], hint_frac: float, seed: int) -> list[dict]:
    """The group's SFT-init data: the source's teacher completions, exactly round(hint_frac * n) of them
    (a seeded choice) with the privileged prompt, so the model learns to use a reference when it has one."""
    by_id = {e["id"]: e for e in train}
    n = len(completions)
    hinted = set(random.Random(seed).sample(range(n), round(hint_frac * n)))
    return [{**r, "prompt": privileged_prompt(by_id[r["id"]]), "hint": True} if i in hinted else {**r, "hint": False}
            for i, r in enumerate(completions)]


# ---------------------------------------------------------------- the group's files (the workflow's two jobs)
def _write_jsonl(path: Path, rows: list[dict]) -> str:
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return sha256_file(path)


def prepare_data(spec: dict, source_dir: str | Path, out_dir: str | Path, hint_test: str | Path,
                 seed: int, log=print) -> dict:
    """data/<group>/: the source's splits with `teacher_prompt`, the hint test split and a manifest.
    The manifest's `task` is the source task (its scorer grades the group); `spec.source` marks the
    files as derived, so a damaged one is reported rather than regenerated by the source's generator."""
    out = Path(out_dir)
    manifest = {"task": spec["source"], "group": GROUP, "splits": {},
                "spec": {"source": "self_distillation", "from": spec["source"], "hint": HINT},
                **provenance({"group": GROUP, "spec": spec}, seed)}
    for split in SPLITS:
        rows = [with_hint(e) for e in load_split(source_dir, split, log)]
        manifest["splits"][split] = {"count": len(rows), "sha256": _write_jsonl(out / f"{split}.jsonl", rows)}
        if split == "test":
            sha = _write_jsonl(Path(hint_test), hint_test_records(rows))
            manifest["hint_test"] = {"count": len(rows), "sha256": sha}
    atomic_write_json(out / "manifest.json", manifest)
    log(f"{GROUP}: {manifest['splits']['train']['count']} training prompts from {spec['source']}, each with a "
        "privileged teacher prompt")
    return manifest


def prepare_sft(spec: dict, completions: str | Path, source_dir: str | Path, out: str | Path, seed: int,
                log=print) -> list[dict]:
    """data/<group>/sft.jsonl: the SFT-init examples (same fields as teacher completions, plus `hint`)."""
    rows = sft_examples(read_jsonl(completions), load_split(source_dir, "train", log), spec["hint_frac"], seed)
    _write_jsonl(Path(out), rows)
    log(f"{GROUP}: {sum(r['hint'] for r in rows)} of {len(rows)} SFT examples carry the reference solution")
    return rows
