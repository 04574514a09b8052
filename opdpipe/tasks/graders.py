"""Graders: ``(response, answer) -> 1.0 | 0.0``, registered by name.

- ``math_exact``  the embedded math task's scorer (GSM8K ``#### n`` or the last ``\\boxed{}``, compared
  as exact fractions); the embedded default keeps it, so its numbers never move.
- ``math_verify`` competition math (DeepMath, AIME, HMMT): the final answer is the last ``\\boxed{...}``
  (or a GSM8K ``#### ...`` line, whichever comes last); it is compared with the gold answer by
  ``math-verify`` (symbolic equivalence: ``\\frac{1}{2}`` = ``0.5``, ``2\\sqrt{2}`` = ``\\sqrt{8}``).
  A response without a boxed or ``####`` answer is wrong: a bare number in the reasoning is not one.
- ``tool_exact``  the embedded tool-use task's scorer (name and JSON arguments equal as a mapping).
- ``tool_call``   ToolAlpaca calls: the tool name must match and the arguments, parsed as JSON, must
  be equal as a mapping, order-insensitive and type-tolerant (``3`` = ``"3"`` = ``3.0``, ``true`` =
  ``"true"``, surrounding whitespace ignored); a wrong, missing or extra argument is wrong. Both
  ``name {json}`` and ToolAlpaca's ``Action: name`` / ``Action Input: {json}`` forms are read.

A data record may name its grader (``"grader"`` key, written by the data stage for real sources);
records without one are scored by their task's own scorer, exactly as before.
"""
from __future__ import annotations

import json
import re
import threading
from typing import Callable

from opdpipe.registry import Registry
from opdpipe.tasks import get_task

Grader = Callable[[str, str], float]
GRADERS: Registry[Grader] = Registry("grader")
MV_TIMEOUT_S = 5  # per parse / verify call; a pathological expression is then judged wrong


def get_grader(name: str) -> Grader:
    return GRADERS.get(name)


# ---------------------------------------------------------------- final-answer extraction
BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
HASHES_RE = re.compile(r"####[ \t]*([^\n]+)")


def last_boxed(text: str) -> tuple[int, str] | None:
    """(position, content) of the last ``\\boxed{...}`` with balanced braces, or None."""
    found = None
    for m in BOXED_RE.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            found = (m.start(), text[m.end():i - 1].strip())
    return found


def final_answer(text: str) -> str | None:
    """The response's final answer: the last boxed content or ``#### ...`` line, whichever is later."""
    boxed = last_boxed(text)
    hashes = list(HASHES_RE.finditer(text))
    last_hash = (hashes[-1].start(), hashes[-1].group(1).strip().rstrip(".")) if hashes else None
    best = max((c for c in (boxed, last_hash) if c is not None), default=None, key=lambda c: c[0])
    return best[1] if best and best[1] else None


# ---------------------------------------------------------------- math-verify
def _timeout() -> int | None:
    """math-verify bounds sympy with SIGALRM, which only the main thread may set."""
    return MV_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


def _mv_parse(latex: str):
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    # the content is already isolated: read it as one LaTeX expression, else as a plain expression
    return parse(f"${latex}$", extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
                 parsing_timeout=_timeout())


def math_verify_score(response: str, answer: str) -> float:
    from math_verify import verify

    pred = final_answer(response)
    if pred is None:
        return 0.0
    gold, got = _mv_parse(str(answer)), _mv_parse(pred)
    if not gold or not got:
        return 0.0
    return float(verify(gold, got, timeout_seconds=_timeout()))


# ---------------------------------------------------------------- tool calls
ACTION_RE = re.compile(r"Action:\s*([A-Za-z_][\w.-]*)\s*\n\s*Action Input:\s*", re.S)
NAME_RE = re.compile(r"\s*([A-Za-z_][\w.-]*)\s*(?=\{)")


def read_call(text: str) -> tuple[str, dict] | None:
    """``name {json}`` or ``Action: name\\nAction Input: {json}`` -> (name, args); None if malformed."""
    m = ACTION_RE.search(text) or NAME_RE.match(text)
    if not m:
        return None
    try:
        args, _ = json.JSONDecoder().raw_decode(text[m.end():].lstrip())
    except json.JSONDecodeError:
        return None
    return (m.group(1), args) if isinstance(args, dict) else None


def _canon(value):
    """A comparison key tolerant to JSON types: numbers and numeric strings, booleans and 'true'."""
    if isinstance(value, dict):
        return {str(k).strip(): _canon(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canon(v) for v in value]
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("num", float(value))
    if isinstance(value, str):
        s = value.strip()
        if s.lower() in ("true", "false"):
            return ("bool", s.lower() == "true")
        try:
            return ("num", float(s))
        except ValueError:
            return ("str", s)
    return ("other", value)


def tool_call_score(response: str, answer: str) -> float:
    got, gold = read_call(response), read_call(answer)
    if got is None or gold is None:
        return 0.0
    return float(got[0] == gold[0] and _canon(got[1]) == _canon(gold[1]))


# ---------------------------------------------------------------- registry
GRADERS.register("math_exact", lambda response, answer: get_task("math").score(response, answer))
GRADERS.register("math_verify", math_verify_score)
GRADERS.register("tool_exact", lambda response, answer: get_task("tooluse").score(response, answer))
GRADERS.register("tool_call", tool_call_score)
GRADER_TASK = {"math_exact": "math", "math_verify": "math", "tool_exact": "tooluse", "tool_call": "tooluse"}


def check_grader(where: str, task: str, name: str) -> None:
    """Refuse an unknown grader, or one made for another task's answers."""
    if name not in GRADERS:
        raise ValueError(f"{where} = {name!r}: unknown grader; allowed: {', '.join(GRADERS.names())}")
    fits = sorted(g for g, t in GRADER_TASK.items() if t == task)
    if GRADER_TASK[name] != task:
        raise ValueError(f"{where} = {name!r} grades {GRADER_TASK[name]} answers; allowed for task {task}: "
                         f"{', '.join(fits)}")


def scorer_for(task: str, records: list[dict]) -> Grader:
    """The scorer of one data file: the grader its records name, else the task's own scorer."""
    names = {r["grader"] for r in records if r.get("grader")}
    if len(names) > 1:
        raise ValueError(f"{task}: records name several graders {sorted(names)}; one data file has one grader")
    if names and any(not r.get("grader") for r in records):
        raise ValueError(f"{task}: some records name grader {sorted(names)[0]!r} and some name none")
    return get_grader(names.pop()) if names else get_task(task).score


def score_record(record: dict, response: str) -> float:
    """One record scored by its own grader (or its task's scorer when it names none)."""
    grader = get_grader(record["grader"]) if record.get("grader") else get_task(record["task"]).score
    return grader(response, record["answer"])
