"""Would compiling the rollout's decode step pay at the default study's size?

One decode step of the default student (random-init, the config's student block): 64 rows (16
prompts x 4 rollouts) feed one token each through the layers and the head, attending a key/value
cache. Written with static shapes, as a compiler needs them: every slot of the cache is attended,
the unused ones masked, and the new key and value are written at a tensor index. The same function
runs eager and through `torch.compile` (inductor), in one process, one thread. Printed: ms per step
of each (median over rounds), the first compiled call's seconds (the compile: run the script twice
to see it with inductor's cache warm) and what one default OPD job would save: its decode steps
(steps x the task's token budget) times the difference, against that compile time, paid again by
every job (each is its own process) and for every new shape (a batch's prompt width sets the cache).

    python benchmarks/compiled_decode.py [--config configs/default.yaml] [--task math] [--steps 200] [--rounds 3]

inductor builds its kernels with a C++ compiler, which must be installed. The default study's fast
path (opdpipe.fastlm) stays eager: see docs/measurements.md, "Fewer passes in the training step".
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from opdpipe.config import load
from opdpipe.fastlm import _Net
from opdpipe.models import build_model
from opdpipe.tokenizer import build_char_tokenizer


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/default.yaml")
    p.add_argument("--task", default="math")
    p.add_argument("--rows", type=int, default=64, help="rollouts decoded at once (prompts x group size)")
    p.add_argument("--prompt", type=int, default=24, help="prompt positions in the cache")
    p.add_argument("--steps", type=int, default=200, help="timed decode steps per path and round")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    tasks = load(args.config)["tasks"]
    if args.task not in tasks:
        p.error(f"--task = {args.task!r}: allowed: {', '.join(tasks)}")
    if min(args.rows, args.prompt, args.steps, args.rounds) < 1:
        p.error(f"--rows = {args.rows}, --prompt = {args.prompt}, --steps = {args.steps}, "
                f"--rounds = {args.rounds}: allowed: all >= 1")
    return args


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary pairs side by side, in real arithmetic."""
    x = x.unflatten(-1, (-1, 2))
    a, b = x[..., 0], x[..., 1]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)


def make_step(net: _Net, rows: int):
    H, d = net.heads, net.head_dim
    emb = net.model.model.embed_tokens.weight

    def step(tok, at, cos, sin, kt, vc, bias):
        """Logits [rows, V] of one new token per row; kt [rows*H, d, K], vc [rows*H, K, d] and the additive
        mask bias [rows*H, 1, K] updated in place at slot `at` (a one-element tensor)."""
        x = emb[tok]
        bias.index_fill_(2, at, 0.0)
        for (qkv, o, gate_up, down), k_c, v_c in zip(net.blocks, kt, vc):
            h = F.linear(net.norm(x), qkv).view(rows, 3, H, d)
            q, k = rotate(h[:, 0], cos, sin), rotate(h[:, 1], cos, sin)
            k_c.index_copy_(2, at, k.reshape(rows * H, d, 1))
            v_c.index_copy_(1, at, h[:, 2].reshape(rows * H, 1, d))
            w = torch.baddbmm(bias, q.reshape(rows * H, 1, d), k_c, alpha=net.scale)
            x = x + F.linear(torch.bmm(torch.softmax(w, dim=-1), v_c).view(rows, H * d), o)
            g, u = F.linear(net.norm(x), gate_up).chunk(2, dim=-1)
            x = x + F.linear(F.silu(g) * u, down)
        return net.head(x)
    return step


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    cfg, tok = load(args.config), build_char_tokenizer()
    budget, opd_steps = cfg["tasks"][args.task]["max_new_tokens"], cfg["tasks"][args.task]["opd"]["steps"]
    net = _Net.of(build_model(cfg["student"]["model"], tok, cfg["seed"]))
    n_layers, H, d, K = len(net.blocks), net.heads, net.head_dim, args.prompt + budget
    gen = torch.Generator().manual_seed(0)
    kt = [torch.randn(args.rows * H, d, K, generator=gen) for _ in range(n_layers)]
    vc = [torch.randn(args.rows * H, K, d, generator=gen) for _ in range(n_layers)]
    bias = torch.full((args.rows * H, 1, K), float("-inf"))
    bias[..., :args.prompt] = 0.0
    inputs = (torch.randint(len(tok), (args.rows,), generator=gen), torch.tensor([args.prompt]),
              torch.rand(args.rows, 1, d // 2, generator=gen), torch.rand(args.rows, 1, d // 2, generator=gen),
              kt, vc, bias)
    eager = make_step(net, args.rows)
    with torch.no_grad():
        t0 = time.perf_counter()
        compiled = torch.compile(eager, dynamic=False)
        first = compiled(*inputs)
        compile_s = time.perf_counter() - t0
        diff = (first - eager(*inputs)).abs().max().item()
        times = {"eager": [], "compiled": []}
        for _ in range(args.rounds):
            for name, fn in (("eager", eager), ("compiled", compiled)):
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    fn(*inputs)
                times[name].append(1e3 * (time.perf_counter() - t0) / args.steps)
    ms = {k: statistics.median(v) for k, v in times.items()}
    decode_steps = opd_steps * budget
    saved = decode_steps * (ms["eager"] - ms["compiled"]) / 1e3
    print(f"decode step, {args.task} student, {args.rows} rows, cache {K} positions, 1 thread, "
          f"medians of {args.rounds} rounds x {args.steps} steps; max |logit difference| {diff:.2e}")
    print(f"| path | ms/step |\n|---|---:|\n| eager | {ms['eager']:.3f} |\n| compiled | {ms['compiled']:.3f} |")
    print(f"first compiled call (compile): {compile_s:.1f} s; one default {args.task} OPD job decodes up to "
          f"{decode_steps} steps ({opd_steps} x {budget}): saves {saved:.1f} s against {compile_s:.1f} s of compile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
