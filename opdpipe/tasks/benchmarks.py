"""Math test sets the paper reports (AIME24, AIME25, HMMT25) as lm-eval tasks.

Each benchmark is read from a local JSON Lines / parquet file or a hub dataset pinned to a commit
(see ``opdpipe.tasks.real.check_source``), in the columns its usual hub copy has:

    aime24   HuggingFaceH4/aime_2024    id, problem, solution, answer, url, year   (split train)
    aime25   MathArena/aime_2025        problem_idx, problem, answer, problem_type (split train)
    hmmt25   MathArena/hmmt_feb_2025    problem_idx, problem, answer, problem_type (split train)

``prepare`` normalises it into the task example format (``id, task, prompt, answer, grader``) in one
JSONL; ``evaluate`` runs it through the same lm-eval templates as every other test split (greedy and
avg@k at temperature 1; the paper reports avg@32), without a newline stop so that a response can
reason over many lines before its ``\\boxed{}`` answer, graded by ``math_verify``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from opdpipe.provenance import atomic_write_json, atomic_write_text, provenance, sha256_file
from opdpipe.registry import Registry
from opdpipe.tasks.real import check_source, load_records, math_prompt


@dataclass(frozen=True)
class Benchmark:
    name: str
    hf_id: str  # the usual hub copy (pin its revision in the config to read it from the hub)
    split: str
    id_field: str
    problem_field: str = "problem"
    answer_field: str = "answer"


BENCHMARKS: Registry[Benchmark] = Registry("benchmark")
for _b in (Benchmark("aime24", "HuggingFaceH4/aime_2024", "train", "id"),
           Benchmark("aime25", "MathArena/aime_2025", "train", "problem_idx"),
           Benchmark("hmmt25", "MathArena/hmmt_feb_2025", "train", "problem_idx")):
    BENCHMARKS.register(_b.name, _b)
DEFAULT_GRADER = "math_verify"
BLOCK_KEYS = ("path", "hf_id", "revision", "split")


def check_benchmarks(where: str, blocks: dict) -> None:
    """Refuse unknown benchmark names and malformed source blocks before any job."""
    for name, block in blocks.items():
        if name not in BENCHMARKS:
            raise ValueError(f"{where}.{name}: unknown benchmark; allowed: {', '.join(BENCHMARKS.names())}")
        extra = sorted(set(block) - set(BLOCK_KEYS))
        if extra:
            raise ValueError(f"{where}.{name}: unknown key(s) {extra}; allowed: {', '.join(BLOCK_KEYS)}")
        check_source(f"{where}.{name}", block)


def load_benchmark(name: str, block: dict, grader: str = DEFAULT_GRADER) -> list[dict]:
    """Problems of one benchmark in the task example format, in file order."""
    bench = BENCHMARKS.get(name)
    records = load_records(block, block.get("split", bench.split))
    fields = (bench.id_field, bench.problem_field, bench.answer_field)
    out, seen = [], set()
    for i, rec in enumerate(records):
        absent = [f for f in fields if f not in rec]
        if absent:
            raise ValueError(f"{name}: record {i} of {block.get('path') or block.get('hf_id')} lacks field(s) "
                             f"{absent}; has {sorted(rec)}")
        rid = f"{name}-{rec[bench.id_field]}"
        if rid in seen:
            raise ValueError(f"{name}: id {rec[bench.id_field]!r} ({bench.id_field}) occurs twice")
        seen.add(rid)
        out.append({"id": rid, "task": "math", "prompt": math_prompt(str(rec[bench.problem_field])),
                    "answer": str(rec[bench.answer_field]).strip(), "grader": grader})
    if not out:
        raise ValueError(f"{name}: no problems in {block.get('path') or block.get('hf_id')}")
    return out


def prepare(name: str, block: dict, out_dir: str | Path, grader: str = DEFAULT_GRADER) -> dict:
    """Write <out_dir>/test.jsonl and manifest.json for one benchmark; return the manifest."""
    import json

    out_dir = Path(out_dir)
    rows = load_benchmark(name, block, grader)
    path = out_dir / "test.jsonl"
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    manifest = {"benchmark": name, "source": block, "grader": grader, "count": len(rows),
                "sha256": sha256_file(path), **provenance({"benchmark": name, "source": block}, 0)}
    atomic_write_json(out_dir / "manifest.json", manifest)
    return manifest


def evaluate(checkpoint, name: str, data_file, out_json, k: int = 32, max_gen_toks: int = 8192, **kw) -> dict:
    """Greedy accuracy and avg@k of a checkpoint on one prepared benchmark (``opd_<name>_*`` tasks)."""
    from opdpipe import evaluate as lm_evaluate

    BENCHMARKS.get(name)
    return lm_evaluate.run(checkpoint, name, data_file, out_json, k=k, max_gen_toks=max_gen_toks, until=(), **kw)
