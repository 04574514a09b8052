"""Adapters from real datasets to the task example format, for the paper-scale config.

- ``deepmath``: DeepMath-103K records (``question``, ``final_answer``, optional ``r1_solution_1``):
  OPD training prompts with their final answers, graded by ``math_verify`` unless the config says
  otherwise.
- ``toolalpaca``: ToolAlpaca records (one API per record with ``Name``, ``Function_Description``
  and ``Instances`` whose ``intermediate_steps`` hold [action, action_input, thought] triples),
  graded by ``tool_call`` (tool name + parsed arguments) unless the config says otherwise.

A source is either a local file (``path``: ``.jsonl``, ``.json`` or ``.parquet``) or a Hugging Face
dataset id pinned to a commit (``hf_id`` + a 40-hex ``revision``; a branch such as ``main`` moves,
so it is refused). The embedded default never reads either.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

FILE_SUFFIXES = (".jsonl", ".json", ".parquet")
REVISION_RE = re.compile(r"^[0-9a-f]{40}$")
SOURCE_GRADER = {"deepmath": "math_verify", "toolalpaca": "tool_call"}  # default grader per adapter
BOXED_INSTRUCTION = r"Please reason step by step, and put your final answer within \boxed{}."


def math_prompt(problem: str) -> str:
    """A competition-math prompt that asks for the boxed final answer ``math_verify`` grades."""
    return f"{problem.strip()}\n{BOXED_INSTRUCTION}\n"


def check_source(where: str, block: dict) -> None:
    """Refuse a malformed source block (``tasks.math``, ``tasks.math.benchmarks.aime24``) up front."""
    has_path, has_hub = "path" in block, "hf_id" in block
    if has_path == has_hub:
        raise ValueError(f"{where}: give exactly one of 'path' (a local {'/'.join(FILE_SUFFIXES)} file) "
                         f"or 'hf_id' (+ 'revision'); got {sorted(k for k in ('path', 'hf_id') if k in block)}")
    if has_path:
        if not str(block["path"]).endswith(FILE_SUFFIXES):
            raise ValueError(f"{where}.path = {block['path']!r}: allowed: a local file ending in "
                             f"{', '.join(FILE_SUFFIXES)} (for a hub dataset use 'hf_id' + 'revision')")
        if "revision" in block:
            raise ValueError(f"{where}.revision = {block['revision']!r}: a local 'path' takes no revision")
        return
    rev = block.get("revision")
    if not isinstance(rev, str) or not REVISION_RE.match(rev):
        raise ValueError(f"{where}.revision = {rev!r}: hub dataset {block['hf_id']!r} needs a pinned commit, "
                         "allowed: 40 lowercase hex digits (a branch or tag such as 'main' can move)")


def read_local(path: str | Path) -> list[dict]:
    """Records of a local JSON Lines, JSON (a list, or JSON Lines) or parquet file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} not found (allowed: an existing {', '.join(FILE_SUFFIXES)} file)")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    text = path.read_text()
    if path.suffix == ".json" and text.lstrip().startswith("["):  # ToolAlpaca ships one JSON list
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def load_records(block: dict, split: str = "train") -> list[dict]:
    """Records of a source block: a local file, or a pinned hub dataset (needs the hub or its cache)."""
    check_source("source", block)
    if "path" in block:
        return read_local(block["path"])
    import datasets

    return list(datasets.load_dataset(block["hf_id"], revision=block["revision"], split=split))


def _missing(rec: dict, keys: tuple[str, ...], source: str, i: int) -> None:
    absent = [k for k in keys if k not in rec]
    if absent:
        raise ValueError(f"{source}: record {i} lacks field(s) {absent}; has {sorted(rec)}")


def _as_block(source) -> dict:
    return source if isinstance(source, dict) else {"path": str(source)}


def load_deepmath(source, split: str = "train") -> list[dict]:
    block, out = _as_block(source), []
    for i, rec in enumerate(load_records(block, split)):
        _missing(rec, ("question", "final_answer"), block.get("path") or block["hf_id"], i)
        answer = str(rec["final_answer"]).strip()
        solution = rec.get("r1_solution_1") or ""
        target = f"{solution.strip()} #### {answer}".strip()
        out.append({"id": f"deepmath-{i}", "task": "math", "prompt": math_prompt(rec["question"]),
                    "target": target, "answer": answer})
    return out


def load_toolalpaca(source, split: str = "train") -> list[dict]:
    block, out = _as_block(source), []
    for i, rec in enumerate(load_records(block, split)):
        _missing(rec, ("Name", "Function_Description", "Instances"), block.get("path") or block["hf_id"], i)
        functions = [k for k in rec["Function_Description"] if k != "components"]
        tools = "; ".join(functions)
        for j, inst in enumerate(rec["Instances"]):
            steps = inst.get("intermediate_steps") or []
            if not steps:
                continue  # an instance answered without a call has no reference call to match
            action, action_input = steps[0][0][0], steps[0][0][1]
            try:
                args = json.loads(action_input) if action_input.strip() else {}
            except json.JSONDecodeError:
                continue
            if not isinstance(args, dict):
                continue
            call = f"{action} {json.dumps(args, separators=(',', ':'), sort_keys=True)}"
            out.append({"id": f"toolalpaca-{i}-{j}", "task": "tooluse",
                        "prompt": f"Tools: {tools}\nUser: {inst['input'].strip()}\nCall: ",
                        "target": call, "answer": call})
    return out


ADAPTERS = {"deepmath": load_deepmath, "toolalpaca": load_toolalpaca}
