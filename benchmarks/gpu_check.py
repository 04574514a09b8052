"""GPU check: OPD steps of the mini pair scaled up (~100M parameters) on cuda in bf16 with LoRA.

    python benchmarks/gpu_check.py                         # cuda, ~100M-parameter pair, bf16, LoRA
    python benchmarks/gpu_check.py --device cpu --tiny     # the same code path on a CPU in seconds

Builds a Qwen3 teacher / student pair (BPE tokenizer trained here on synthetic math text, chat
template) with save_pretrained, loads it back through opdpipe.backends as pretrained checkpoints
(teacher frozen in bf16, student LoRA over a bf16 base with bf16 autocast), and runs OPD steps:
rollouts (batched KV-cache sampling), chunked and micro-batched teacher scoring, micro-batched
LoRA updates. Prints tokens/s, peak device memory, the per-step split (rollout / teacher /
update), and the largest gap between sampled-token log-probs computed on the device and on the
CPU in float32 for the same tokens. The models are untrained: this measures speed, memory and
numerics, not learning.

Needs only torch, transformers, peft, tokenizers and safetensors (plus this working tree): no
Snakemake, lm-eval, MLflow or datasets; it exits non-zero if any of them was imported.
"""
import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the working tree, installed or not

from opdpipe import optim  # noqa: E402
from opdpipe.backends import lora  # noqa: E402
from opdpipe.backends.accumulate import accumulate, logprobs_in_micro_batches  # noqa: E402
from opdpipe.backends.chat import encode_prompts  # noqa: E402
from opdpipe.backends.device import autocast, resolve_device  # noqa: E402
from opdpipe.backends.loading import load_student, load_teacher  # noqa: E402
from opdpipe.backends.minipair import build_qwen3, save_snapshot, train_tokenizer  # noqa: E402
from opdpipe.backends.rollout import get_engine  # noqa: E402
from opdpipe.divergences import clip_log_u, get_divergence  # noqa: E402
from opdpipe.advantages import compute_advantages, get_design  # noqa: E402
from opdpipe.scoring import sequence_logprobs, teacher_logprobs  # noqa: E402
from opdpipe.tasks import get_task  # noqa: E402

FORBIDDEN = ("snakemake", "lm_eval", "mlflow", "datasets", "math_verify", "vllm")
SIZES = {  # ~100M parameters each (the paper's pair is 8B; head_dim >= 32 for vLLM's CPU backend)
    "full": {"hidden_size": 768, "num_hidden_layers": 14, "num_attention_heads": 12, "num_key_value_heads": 4,
             "intermediate_size": 2560, "head_dim": 64, "max_position_embeddings": 1024},
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
             "intermediate_size": 128, "head_dim": 32, "max_position_embeddings": 256},
}


def build_pair(root: Path, size: str, seed: int):
    examples = get_task("math").generate(2000, seed, min_steps=1, max_steps=3, max_operand=99)
    tok = train_tokenizer([e["prompt"] + e["target"] for e in examples], 2048)
    for role, offset in (("teacher", 1), ("student", 2)):
        model = build_qwen3(SIZES[size], tok, seed + offset)
        save_snapshot(model, tok, root / role, f"# gpu_check {role}\n")
        n = sum(p.numel() for p in model.parameters())
    return tok, examples, n


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def opd_step(student, teacher, tok, ctx, engine, args, dev, gen, opt, div, design):
    t0 = time.perf_counter()
    with autocast(dev, torch.bfloat16):
        roll = engine.sample(student, ctx, args.max_new_tokens, tok.eos_token_id, tok.pad_token_id, gen)
    sync(dev)
    t1 = time.perf_counter()
    resp, mask, pad = roll.response, roll.mask, tok.pad_token_id
    rows = torch.arange(len(resp), device=resp.device)
    lq = logprobs_in_micro_batches(lambda r: teacher_logprobs(
        teacher, [ctx[i] for i in r.tolist()], resp[r], mask[r], pad, args.chunk), rows, args.micro)
    sync(dev)
    t2 = time.perf_counter()
    student.train()

    def lp_fn(r):
        with autocast(dev, torch.bfloat16):
            return sequence_logprobs(student, [ctx[i] for i in r.tolist()], resp[r], mask[r], pad, args.chunk)

    lp_old = logprobs_in_micro_batches(lp_fn, rows, args.micro)
    log_u, _ = clip_log_u(lq - lp_old, 20.0, mask)
    adv, _ = compute_advantages(design, div, log_u, mask, 0.0)
    opt.zero_grad(set_to_none=True)
    loss, _ = accumulate(lp_fn, rows, args.micro, lp_old, adv, mask, "token_mean", None)
    torch.nn.utils.clip_grad_norm_([p for p in student.parameters() if p.requires_grad], 1.0)
    opt.step()
    student.eval()
    sync(dev)
    t3 = time.perf_counter()
    return roll, {"rollout_s": t1 - t0, "teacher_s": t2 - t1, "update_s": t3 - t2, "tokens": int(mask.sum()),
                  "loss": loss}


def cpu_gap(student, teacher, tok, ctx, roll, n: int, chunk: int, dev) -> dict:
    """Largest |lp_device - lp_cpu_float32| over the same sampled tokens (first n rollouts)."""
    resp, mask = roll.response[:n], roll.mask[:n]
    c = ctx[:n]
    out = {}
    with torch.no_grad():
        merged = lora.merged(student).eval()
        pairs = {"student": merged, "teacher": teacher}
        for name, model in pairs.items():
            with autocast(dev, torch.bfloat16):
                on_dev = sequence_logprobs(model, c, resp, mask, tok.pad_token_id, chunk).float().cpu()
            ref = copy.deepcopy(model).to("cpu", torch.float32)
            on_cpu = sequence_logprobs(ref, c, resp.cpu(), mask.cpu(), tok.pad_token_id, 0)
            out[name] = (on_dev - on_cpu).abs().max().item()
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu", "auto"])
    p.add_argument("--tiny", action="store_true", help="a tiny pair (CPU test of the same code path)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--prompts", type=int, default=32, help="prompts per step (4 rollouts each)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--chunk", type=int, default=64, help="log-prob chunk (response positions)")
    p.add_argument("--micro", type=int, default=32, help="micro-batch size (rollouts)")
    p.add_argument("--rank", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.tiny:
        args.prompts, args.max_new_tokens, args.micro, args.chunk = min(args.prompts, 4), min(args.max_new_tokens, 16), \
            min(args.micro, 4), min(args.chunk, 8)
    dev = resolve_device(args.device, "--device")
    torch.manual_seed(args.seed)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tok, examples, n_params = build_pair(Path(tmp), "tiny" if args.tiny else "full", args.seed)
        teacher = load_teacher(Path(tmp) / "teacher", {"device": args.device, "dtype": "bfloat16"})
        block = {"device": args.device, "dtype": "bfloat16", "gradient_checkpointing": True,
                 "adapter": {"type": "lora", "rank": args.rank, "alpha": args.rank, "target_modules": "all-linear"}}
        student = lora.attach_lora(load_student(Path(tmp) / "student", block), lora.check_adapter(block["adapter"]))
    opt = optim.AdamW([q for q in student.parameters() if q.requires_grad], lr=1e-4)  # as the trainer builds it
    engine, div, design = get_engine("hf"), get_divergence("reverse_kl"), get_design("opd_plus")
    gen = torch.Generator(device=dev).manual_seed(args.seed)
    chat = {"template": "auto", "kwargs": {"enable_thinking": False}}
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rows = []
    for step in range(args.steps):
        batch = examples[step * args.prompts:(step + 1) * args.prompts]
        ctx = [ids for ids in encode_prompts(tok, [e["prompt"] for e in batch], chat) for _ in range(4)]
        roll, m = opd_step(student, teacher, tok, ctx, engine, args, dev, gen, opt, div, design)
        rows.append(m)
        print(f"step {step}: {json.dumps({k: round(v, 4) for k, v in m.items()})}", flush=True)
    steady = rows[1:] or rows  # the first step includes kernel warm-up
    wall = sum(r["rollout_s"] + r["teacher_s"] + r["update_s"] for r in steady)
    report = {
        "device": str(dev), "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "torch": torch.__version__, "params_per_model": n_params, "vocab": len(tok),
        "rollouts_per_step": len(ctx), "max_new_tokens": args.max_new_tokens, "lora_rank": args.rank,
        "tokens_per_s": sum(r["tokens"] for r in steady) / wall,
        "split_s": {k: sum(r[k] for r in steady) / len(steady) for k in ("rollout_s", "teacher_s", "update_s")},
        "peak_memory_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None,
        "max_logprob_gap_vs_cpu_fp32": cpu_gap(student, teacher, tok, ctx, roll, 8, args.chunk, dev),
        "wall_s": time.perf_counter() - t_start,
    }
    print(json.dumps(report, indent=2))
    leaked = sorted(m for m in FORBIDDEN if m in sys.modules)
    if leaked:
        sys.exit(f"imported {leaked}: the GPU machine may not have them")
    if not all(torch.isfinite(torch.tensor(r["loss"])) for r in rows):
        sys.exit("a loss was not finite")


if __name__ == "__main__":
    main()
