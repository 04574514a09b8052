"""ToolAlpaca-style tool use: pick the right tool from a short list and fill its arguments.

    prompt: "Tools: play(song); weather(city,unit); alarm(time)\nUser: weather in oslo in f\nCall: "
    target: 'weather {"city":"oslo","unit":"f"}'

Scoring parses the call: the tool name must match and the JSON arguments must be equal as a
mapping (argument order and whitespace do not matter; a wrong, missing or extra argument does).
"""
from __future__ import annotations

import json
import math
import random
import re

from opdpipe.tasks import TASKS, Task

CITIES = ("oslo", "rome", "lima", "kyiv", "doha", "baku", "riga", "bern", "pune", "nice", "cork", "graz", "bonn",
          "faro", "male")
PEOPLE = ("ann", "bob", "cal", "dee", "eve", "fay", "gus", "hal", "ivy", "jo")
SONGS = ("blue", "rain", "home", "fire", "gold", "moon", "sea", "road")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
COUNTS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twenty", "thirty")
# name -> (argument names, value sampler, request templates, number of distinct argument values)
TOOLS = {
    "weather": (("city", "unit"), lambda r: [r.choice(CITIES), r.choice(("c", "f"))],
                ("weather in {city} in {unit}", "how hot is {city}? use {unit}"), len(CITIES) * 2),
    "alarm": (("day", "time"), lambda r: [r.choice(DAYS), r.choice(("am", "pm", "noon"))],
              ("wake me {day} at {time}", "set an alarm for {day} {time}"), len(DAYS) * 3),
    "email": (("to", "topic"), lambda r: [r.choice(PEOPLE), r.choice(SONGS)],
              ("mail {to} about {topic}", "send {to} a note on {topic}"), len(PEOPLE) * len(SONGS)),
    "play": (("song",), lambda r: [r.choice(SONGS)], ("play {song}", "put on the song {song}"), len(SONGS)),
    "timer": (("mins",), lambda r: [r.choice(COUNTS)], ("timer for {mins} min", "count down {mins} min"),
              len(COUNTS)),
    "call": (("who",), lambda r: [r.choice(PEOPLE)], ("call {who}", "ring {who} now"), len(PEOPLE)),
}
CALL_RE = re.compile(r"^\s*([A-Za-z_]\w*)\s*(\{.*\})\s*$", re.S)


def _signature(name: str) -> str:
    return f"{name}({','.join(TOOLS[name][0])})"


def _one(rng: random.Random, tools_per_prompt: int) -> tuple[str, str, str]:
    shown = rng.sample(sorted(TOOLS), tools_per_prompt)
    name = rng.choice(shown)
    arg_names, sampler, templates, _ = TOOLS[name]
    args = dict(zip(arg_names, sampler(rng)))
    request = rng.choice(templates).format(**args)
    prompt = f"Tools: {'; '.join(_signature(t) for t in shown)}\nUser: {request}\nCall: "
    call = f"{name} {json.dumps(args, separators=(',', ':'))}"
    return prompt, call, call


def capacity(tools_per_prompt: int = 3) -> int:
    """Exact number of distinct prompts: ordered tool lists x chosen tool x template x values."""
    lists_per_tool = tools_per_prompt * math.perm(len(TOOLS) - 1, tools_per_prompt - 1)
    return lists_per_tool * sum(len(t[2]) * t[3] for t in TOOLS.values())


def generate(n: int, seed: int, tools_per_prompt: int = 3, exclude: set[str] | None = None) -> list[dict]:
    if not 1 <= tools_per_prompt <= len(TOOLS):
        raise ValueError(f"tooluse: tools_per_prompt must be in [1, {len(TOOLS)}], got {tools_per_prompt}")
    rng, seen, out, tries = random.Random(seed), set(exclude or ()), [], 0
    while len(out) < n:
        tries += 1
        if tries > 50 * n + 1000:
            raise ValueError(f"tooluse: could only make {len(out)} distinct prompts of the {n} asked for; "
                             "lower the sizes or raise tools_per_prompt")
        prompt, target, answer = _one(rng, tools_per_prompt)
        if prompt not in seen:
            seen.add(prompt)
            out.append({"id": f"tooluse-{seed}-{len(out)}", "task": "tooluse", "prompt": prompt, "target": target, "answer": answer})
    return out


def with_error(example: dict, rng: random.Random) -> list[tuple[str, bool]] | None:
    """One argument value replaced by another valid-looking one; the call is then closed as usual."""
    parsed = parse_call(example["target"])
    if parsed is None or not parsed[1]:
        return None
    name, args = parsed
    key = rng.choice(sorted(args))
    pool = sorted({v for vals in (CITIES, PEOPLE, SONGS, DAYS, COUNTS, ("c", "f", "am", "pm", "noon")) for v in vals}
                  - {args[key]})
    text = example["target"]
    marker = f'"{key}":"{args[key]}"'
    start = text.index(marker) + len(f'"{key}":"')
    return [(text[:start], True), (rng.choice(pool), False), (text[start + len(args[key]):], True)]


def parse_call(text: str) -> tuple[str, dict] | None:
    """'name {json}' -> (name, args), or None when the text is not one well-formed call."""
    m = CALL_RE.match(text.strip().split("\n")[0])
    if not m:
        return None
    try:
        args = json.loads(m.group(2))
    except json.JSONDecodeError:
        return None
    return (m.group(1), args) if isinstance(args, dict) else None


def calls_match(pred: str, gold: str) -> bool:
    p, g = parse_call(pred), parse_call(gold)
    if p is None or g is None:
        return False
    norm = lambda args: {str(k).strip(): (v.strip() if isinstance(v, str) else v) for k, v in args.items()}
    return p[0] == g[0] and norm(p[1]) == norm(g[1])


def score(response: str, answer: str) -> float:
    return float(calls_match(response, answer))


TASKS.register("tooluse", Task("tooluse", generate, score, ("\n",), capacity, with_error))
