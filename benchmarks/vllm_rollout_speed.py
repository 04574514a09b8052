"""Rollout speed of `rollout.backend: vllm` against `hf` for the mini study's step, interleaved.

    .venv-vllm/bin/python benchmarks/vllm_rollout_speed.py              # the mini study's shape
    .venv-vllm/bin/python benchmarks/vllm_rollout_speed.py --rounds 3 --student results/mini/hub/student

One step's rollouts as configs/mini.yaml draws them (8 prompts x 4 rollouts, up to 32 new tokens,
math prompts through the chat template) from the mini student (Qwen3 architecture of mini.yaml,
with its LoRA adapter, rank 16 on all linear layers, B perturbed so the adapter matters). Each round
samples once with each engine, in alternating order, from the same weights (vLLM gets the merged
LoRA weights by `sync`, timed apart); the ratio is of median tokens per second. Without
--student the model is untrained (it rarely stops early: the lengths are the budget), which
measures speed, not learning. Prints one JSON line; writes it to --out if given.
"""
import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the working tree, installed or not

from opdpipe.backends import lora  # noqa: E402
from opdpipe.backends.chat import encode_prompts  # noqa: E402
from opdpipe.backends.loading import load_student  # noqa: E402
from opdpipe.backends.minipair import build_qwen3, save_snapshot, train_tokenizer  # noqa: E402
from opdpipe.backends.rollout import get_engine  # noqa: E402
from opdpipe.backends.vocab import load_checkpoint_tokenizer  # noqa: E402
from opdpipe.tasks import get_task  # noqa: E402


def untrained_student(folder: Path, study: dict) -> Path:
    train = get_task("math").generate(400, seed=0, **study["tasks"]["math"]["knobs"])
    tok = train_tokenizer([e["prompt"] + e["target"] for e in train], study["mini_pair"]["vocab_size"])
    model = build_qwen3(study["mini_pair"]["student"]["model"], tok, seed=2)
    save_snapshot(model, tok, folder, "# untrained mini student (benchmark)\n")
    return folder


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "mini.yaml"))
    ap.add_argument("--student", help="a student folder (default: an untrained one of the config's shape)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    study = yaml.safe_load(Path(args.config).read_text())
    opd, task = study["opd"], study["tasks"]["math"]
    P, G, n_new = opd["prompts_per_step"], opd["group_size"], task["max_new_tokens"]
    folder = Path(args.student) if args.student else untrained_student(Path(tempfile.mkdtemp()) / "student", study)
    tok = load_checkpoint_tokenizer(folder)
    spec = lora.check_adapter(study["student"]["adapter"])
    model = lora.attach_lora(load_student(folder, {"dtype": "float32"}), spec)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    model.eval()
    prompts = [e["prompt"] for e in get_task("math").generate(P * args.rounds, seed=1, **task["knobs"])]
    engines = {"hf": get_engine("hf"), "vllm": get_engine("vllm", model_dir=folder, dtype=torch.float32, seed=0)}
    _, start_s = timed(lambda: engines["vllm"].sync(model))  # engine start + first weight sync
    times = {"hf": [], "vllm": [], "vllm_sync": []}
    tokens = {"hf": [], "vllm": []}
    for r in range(args.rounds + 1):  # round 0 warms both up and is not counted
        ctx = [x for x in encode_prompts(tok, prompts[(r % args.rounds) * P:][:P], study["chat"]) for _ in range(G)]
        for name in (("hf", "vllm") if r % 2 else ("vllm", "hf")):
            g = torch.Generator().manual_seed(r)
            with torch.no_grad():
                roll, s = timed(lambda: engines[name].sample(model, ctx, n_new, tok.eos_token_id, tok.pad_token_id, g))
            if r:
                times[name].append(s)
                tokens[name].append(int(roll.mask.sum()))
        _, s = timed(lambda: engines["vllm"].sync(model))
        if r:
            times["vllm_sync"].append(s)
    tps = {k: statistics.median(t / s for t, s in zip(tokens[k], times[k])) for k in ("hf", "vllm")}
    result = {"rollouts_per_step": P * G, "max_new_tokens": n_new, "rounds": args.rounds, "threads": args.threads,
              "trained_student": bool(args.student), "engine_start_s": round(start_s, 2),
              "median_s": {k: round(statistics.median(v), 4) for k, v in times.items()},
              "median_tokens": {k: statistics.median(v) for k, v in tokens.items()},
              "tokens_per_s": {k: round(v, 1) for k, v in tps.items()},
              "speed_ratio_vllm_over_hf": round(tps["vllm"] / tps["hf"], 2)}
    print(json.dumps(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
