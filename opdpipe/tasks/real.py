"""Adapters from real datasets to the task example format, for the paper-scale config.

- ``deepmath``: DeepMath-103K-style records (``question``, ``final_answer``, optional
  ``r1_solution_1``), scored by the math task's answer equivalence.
- ``toolalpaca``: ToolAlpaca-style records (one API per record with ``Name``, ``Function_Description``
  and ``Instances`` whose ``intermediate_steps`` hold [action, action_input, thought] triples),
  scored by the tooluse task's call matching.

``source`` is a local JSON/JSONL file or a Hugging Face dataset id (needs the hub; the embedded
default never calls it).
"""
from __future__ import annotations

import json
from pathlib import Path


def _load_records(source: str, split: str) -> list[dict]:
    import datasets

    path = Path(source)
    if path.exists():
        if path.suffix == ".json":  # ToolAlpaca ships one JSON list
            return json.loads(path.read_text())
        return list(datasets.load_dataset("json", data_files={split: str(path)}, split=split))
    return list(datasets.load_dataset(source, split=split))


def _missing(rec: dict, keys: tuple[str, ...], source: str, i: int) -> None:
    absent = [k for k in keys if k not in rec]
    if absent:
        raise ValueError(f"{source}: record {i} lacks field(s) {absent}; has {sorted(rec)}")


def load_deepmath(source: str, split: str = "train") -> list[dict]:
    out = []
    for i, rec in enumerate(_load_records(source, split)):
        _missing(rec, ("question", "final_answer"), source, i)
        answer = str(rec["final_answer"]).strip()
        solution = rec.get("r1_solution_1") or ""
        target = f"{solution.strip()} #### {answer}".strip()
        out.append({"id": f"deepmath-{i}", "task": "math", "prompt": rec["question"].strip() + "\n",
                    "target": target, "answer": answer})
    return out


def load_toolalpaca(source: str, split: str = "train") -> list[dict]:
    out = []
    for i, rec in enumerate(_load_records(source, split)):
        _missing(rec, ("Name", "Function_Description", "Instances"), source, i)
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
            call = f"{action} {json.dumps(args, separators=(',', ':'), sort_keys=True)}"
            out.append({"id": f"toolalpaca-{i}-{j}", "task": "tooluse",
                        "prompt": f"Tools: {tools}\nUser: {inst['input'].strip()}\nCall: ",
                        "target": call, "answer": call})
    return out


ADAPTERS = {"deepmath": load_deepmath, "toolalpaca": load_toolalpaca}
