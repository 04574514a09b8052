"""Multi-step arithmetic word problems with a worked solution and a GSM8K-style final answer.

    prompt: "Ann has 7 pens. She gets 5 more. She loses 3. How many pens?\n"
    target: "7+5=12. 12-3=9. #### 9"
"""
from __future__ import annotations

import random
import re
from fractions import Fraction

from opdpipe.tasks import TASKS, Task

NAMES = ("Ann", "Bob", "Cal", "Dee", "Eve", "Fay", "Gus", "Hal", "Ida", "Jon", "Kim", "Lu")
ITEMS = ("pens", "cups", "eggs", "cards", "coins", "books", "rocks", "keys")
ANSWER_RE = re.compile(r"####\s*(-?[\d,]*\.?\d+)")
BOXED_RE = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")


def _one(rng: random.Random, min_steps: int, max_steps: int, max_operand: int) -> tuple[str, str, str]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    value = rng.randint(1, max_operand)
    prompt, work = [f"{name} has {value} {item}."], []
    for _ in range(rng.randint(min_steps, max_steps)):
        b = rng.randint(1, max_operand)
        if value - b >= 0 and rng.random() < 0.5:
            prompt.append(f"Loses {b}.")
            work.append(f"{value}-{b}={value - b}.")
            value -= b
        else:
            prompt.append(f"Gets {b}.")
            work.append(f"{value}+{b}={value + b}.")
            value += b
    prompt.append("How many?")
    return " ".join(prompt) + "\n", " ".join(work) + f" #### {value}", str(value)


def capacity(min_steps: int = 2, max_steps: int = 3, max_operand: int = 9) -> int:
    # lower bound on distinct prompts: names x items x operand choices (only the shortest problems)
    return len(NAMES) * len(ITEMS) * max_operand ** (min_steps + 1)


def generate(n: int, seed: int, min_steps: int = 2, max_steps: int = 3, max_operand: int = 9,
             exclude: set[str] | None = None) -> list[dict]:
    if not 1 <= min_steps <= max_steps:
        raise ValueError(f"math: need 1 <= min_steps <= max_steps, got min_steps={min_steps}, max_steps={max_steps}")
    if max_operand < 1:
        raise ValueError(f"math: max_operand must be >= 1, got {max_operand}")
    rng, seen, out = random.Random(seed), set(exclude or ()), []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 50 * n + 1000:
            raise ValueError(f"math: could only make {len(out)} distinct problems of the {n} asked for "
                             f"(steps {min_steps}-{max_steps}, max_operand {max_operand}); lower the sizes")
        prompt, target, answer = _one(rng, min_steps, max_steps, max_operand)
        if prompt not in seen:
            seen.add(prompt)
            out.append({"id": f"math-{seed}-{len(out)}", "task": "math", "prompt": prompt, "target": target, "answer": answer})
    return out


STEP_RE = re.compile(r"(\d+)([+-])(\d+)=(\d+)\.")


def with_error(example: dict, rng: random.Random) -> list[tuple[str, bool]] | None:
    """One wrong intermediate result, then every later step carried on from it consistently."""
    steps = STEP_RE.findall(example["target"])
    if not steps:
        return None
    i = rng.randrange(len(steps))
    for _ in range(10):
        wrong = int(steps[i][3]) + rng.choice((-2, -1, 1, 2))
        value, tail = wrong, []
        for _a, op, b, _r in steps[i + 1:]:
            new = value + int(b) if op == "+" else value - int(b)
            tail.append(f"{value}{op}{b}={new}.")
            value = new
        if wrong >= 0 and value >= 0 and all("=-" not in t for t in tail):
            break
    else:
        return None
    head = " ".join(f"{a}{op}{b}={r}." for a, op, b, r in steps[:i])
    a, op, b, _ = steps[i]
    before = (head + " " if head else "") + f"{a}{op}{b}="
    after = "." + "".join(" " + t for t in tail) + f" #### {value}"
    return [(before, True), (str(wrong), False), (after, True)]


def extract_answer(text: str) -> str | None:
    """The final answer: after '####' (GSM8K style) or inside the last \\boxed{} (competition style)."""
    m = ANSWER_RE.search(text)
    if m:
        return m.group(1).replace(",", "")
    boxed = BOXED_RE.findall(text)
    return boxed[-1].strip() if boxed else None


def _as_number(s: str) -> Fraction | None:
    s = s.strip().strip("$").replace(",", "").replace(" ", "")
    m = re.fullmatch(r"\\[dt]?frac\{(-?\d+)\}\{(-?\d+)\}", s)
    if m:
        s = f"{m.group(1)}/{m.group(2)}"
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def answers_equal(pred: str, gold: str) -> bool:
    a, b = _as_number(pred), _as_number(gold)
    if a is not None and b is not None:
        return a == b
    norm = lambda s: re.sub(r"\s+|\$|\\left|\\right|\\!|\\,", "", s)
    return norm(pred) == norm(gold)


def score(response: str, answer: str) -> float:
    pred = extract_answer(response)
    return float(pred is not None and answers_equal(pred, answer))


TASKS.register("math", Task("math", generate, score, ("\n",), capacity, with_error))
