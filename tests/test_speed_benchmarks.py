"""benchmarks/scaling.py and benchmarks/vs_trl.py: argument checks, the FLOP count against torch's own
counter, a one-point scaling run, and (where TRL is installed) TRL's KL convention and a one-round run;
the argument checks of sft_step.py and setup_install.sh."""
import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch

from opdpipe import onednn

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))
import bench_world as bw  # noqa: E402
import scaling  # noqa: E402
import vs_trl  # noqa: E402

HAS_TRL = importlib.util.find_spec("trl") is not None
NO_TRL = "TRL is an optional benchmark extra (make bench-env; .venv-bench/bin/python -m pytest tests/test_speed_benchmarks.py)"


def test_scaling_arguments_are_checked_before_any_work():
    args = scaling.parse_args([])
    assert args.axes == ["batch", "budget", "size"] and args.batch == [16, 32, 64, 128]
    assert args.budget == [32, 64, 128, 256] and args.size == [1, 4, 16]
    for argv, message in [(["--axes", "batch,depth"], r"--axes: unknown \['depth'\]; allowed: batch, budget, size"),
                          (["--size", "2"], r"--size = '2': allowed factors: 1, 4, 16"),
                          (["--batch", "16,x"], r"--batch = '16,x': allowed: comma-separated positive integers"),
                          (["--budget", "0"], r"--budget = '0': allowed"),
                          (["--rounds", "0"], r"--rounds = 0")]:
        assert re.search(message, _stderr_of(scaling.parse_args, argv)), argv


def test_vs_trl_arguments_are_checked_without_trl():
    assert vs_trl.parse_args([]).directions == ["forward_kl", "reverse_kl"]
    assert re.search(r"--directions = \['jsd'\]: allowed: forward_kl, reverse_kl",
                     _stderr_of(vs_trl.parse_args, ["--directions", "jsd"]))
    assert re.search(r"--kernels = -1: allowed: rounds >= 1, warmup >= 0, kernels >= 0",
                     _stderr_of(vs_trl.parse_args, ["--kernels", "-1"]))


def _stderr_of(fn, argv) -> str:
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit):
        fn(argv)
    return err.getvalue()


@pytest.mark.parametrize("who", ["student", "teacher"])
def test_flop_count_matches_torch_counter(who):
    """torch's FlopCounterMode counts the matmuls (it leaves out CPU attention): the count without the
    attention term must equal it exactly, forward, forward + backward (3x) and with a cut output head."""
    from torch.utils.flop_counter import FlopCounterMode

    from opdpipe.models import build_model
    from opdpipe.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer()
    block = bw.default_study()[who]
    model, ids = build_model(block, tok, 0), torch.randint(3, len(tok), (3, 20))
    with FlopCounterMode(display=False) as fc:
        model(input_ids=ids).logits.sum().backward()
    assert fc.get_total_flops() == 3 * bw.forward_flops(block, len(tok), 60, context=0)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(input_ids=ids, logits_to_keep=5)
    assert fc.get_total_flops() == bw.forward_flops(block, len(tok), 60, context=0, head_tokens=15)


def test_scaled_student_has_4x_and_16x_non_embedding_parameters():
    from opdpipe.models import build_model
    from opdpipe.tokenizer import build_char_tokenizer

    tok, base = build_char_tokenizer(), bw.default_study()["student"]

    def body(width):
        m = build_model(bw.scaled(base, width), tok, 0)
        return sum(p.numel() for n, p in m.named_parameters() if "embed" not in n and "norm" not in n)
    assert body(2) == 4 * body(1) and body(4) == 16 * body(1)


def test_scaling_runs_one_small_point(tmp_path, capsys):
    """The real OPD step (opdpipe.trainer.train_step) at 2 prompts x 4 rollouts, 32 new tokens."""
    assert scaling.main(["--axes", "batch", "--batch", "2", "--rounds", "1", "--warmup", "0",
                         "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    row = re.search(r"^\| 2 \| ([\d.]+) \| 1\.00 \| (\d+) \| (\d+) / 256 \| ([\d.]+) \|", out, re.M)
    assert row, out
    s, tok_s, tokens, gflop = float(row[1]), int(row[2]), int(row[3]), float(row[4])
    assert 0 < s and 0 < tokens <= 2 * 4 * 32
    assert tokens / (s + 5e-4) - 1 <= tok_s <= tokens / max(s - 5e-4, 1e-9) + 1  # s is printed to 3 decimals
    assert gflop > 0 and (tmp_path / "student_x1" / "config.json").exists()


@pytest.mark.skipif(not HAS_TRL, reason=NO_TRL)
@pytest.mark.parametrize("direction", ["forward_kl", "reverse_kl"])
def test_trl_beta_is_the_named_kl_direction(direction):
    """TRL's generalized JSD at the beta vs_trl.py uses equals the KL it is named after (per token mean)."""
    from trl.experimental.gkd import GKDTrainer

    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, 7, generator=g), torch.randn(2, 3, 7, generator=g)
    ls, lt = s.log_softmax(-1), t.log_softmax(-1)
    want = (lt.exp() * (lt - ls)).sum(-1) if direction == "forward_kl" else (ls.exp() * (ls - lt)).sum(-1)
    got = GKDTrainer.generalized_jsd_loss(s, t, labels=torch.zeros(2, 3, dtype=torch.long),
                                          beta=vs_trl.DIRECTIONS[direction])
    torch.testing.assert_close(got, want.mean(), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not HAS_TRL, reason=NO_TRL)
def test_vs_trl_runs_one_round(tmp_path, capsys):
    assert vs_trl.main(["--rounds", "1", "--warmup", "0", "--directions", "reverse_kl", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\| opdpipe \| [\d.]+ \| \d+ \|", out, re.M) and re.search(r"^\| trl \| [\d.]+ \| \d+ \|", out, re.M)
    assert re.search(r"TRL / opdpipe seconds per step: [\d.]+ \(ratio of medians\)", out)
    assert re.search(r"by kernel class \(torch.profiler, 5 steps, ms/step\): matmul [\d.]+, attention [\d.]+, "
                     r"sampling draws [\d.]+, everything else", out)


def test_kernel_classes_name_the_step_kernels():
    cls = {op: bw.kernel_class(op) for op in (
        "aten::mm", "aten::bmm", "aten::addmm", "mkldnn::_linear_pointwise", "aten::_scaled_dot_product_flash_attention_for_cpu",
        "aten::_scaled_dot_product_flash_attention_for_cpu_backward", "aten::_softmax", "aten::_log_softmax",
        "aten::exponential_", "aten::multinomial", "aten::mul", "Optimizer.step#AdamW.step")}
    assert cls == {"aten::mm": "matmul", "aten::bmm": "matmul", "aten::addmm": "matmul",
                   "mkldnn::_linear_pointwise": "matmul",
                   "aten::_scaled_dot_product_flash_attention_for_cpu": "attention",
                   "aten::_scaled_dot_product_flash_attention_for_cpu_backward": "attention",
                   "aten::_softmax": "attention", "aten::_log_softmax": None, "aten::exponential_": "sampling draws",
                   "aten::multinomial": None, "aten::mul": None, "Optimizer.step#AdamW.step": None}


def test_kernel_split_times_each_class_and_counts_the_matmul_flops(monkeypatch):
    monkeypatch.setattr(onednn, "_ON_THIS_CPU", True)  # oneDNN's inner product on any CPU: its FLOP formula too
    g = torch.Generator().manual_seed(0)
    a, b, q = torch.randn(64, 96, generator=g), torch.randn(96, 128, generator=g), torch.randn(2, 4, 8, 16, generator=g)
    probs = torch.rand(4, 99, generator=g)

    x, w = torch.randn(1984, 64, generator=g), torch.randn(512, 64, generator=g)

    def step():
        torch.relu(a @ b)
        onednn.linear(x, w)  # oneDNN's inner product: a matmul too
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
        torch.multinomial(probs, 1, generator=g)
    out = bw.kernel_split(step, 3)
    assert out["matmul_gflop"] == 2 * (64 * 96 * 128 + 1984 * 64 * 512) / 1e9  # one step's, by torch's counter
    assert all(out["s"][k] > 0 for k in bw.KERNELS) and sum(out["s"].values()) < out["wall"]


def test_kernel_report_sets_the_classes_against_a_3x_step():
    split = {"s": {"matmul": 0.060, "attention": 0.020, "sampling draws": 0.003}, "wall": 0.130, "matmul_gflop": 5.5}
    out = vs_trl.kernel_report(split, trl_s=0.270, steps=5, peak=110.0)
    assert "matmul 60.0, attention 20.0, sampling draws 3.0, everything else 47.0 (wall 130.0)" in out
    assert "5.50 GFLOP at 91.7 GFLOP/s (83% of its library's 512^3 rate; 50.0 ms at that rate)" in out
    assert "takes 90.0 ms. Matmul + attention + sampling draws take 83.0 ms of it (92%), leaving 7.0 ms" in out
    assert "with every matmul at that rate they would take 73.0 ms (81%), leaving 17.0 ms." in out


def test_step_flops_shared_prompts_count_the_prompt_once():
    """Per row (prompts=None), a full pass is forward_flops over prompt + response at mean causal context
    (P + T) / 2; with the prompt shared by G rollouts, G - 1 of every G rows' prompt positions drop out."""
    st = bw.default_study()
    B, P, T, V, G = 64, 44, 32, 99, 4
    rows = bw.step_flops(st["student"], st["teacher"], V, B, P, T)
    assert rows["update"] == pytest.approx(3 * bw.forward_flops(st["student"], V, B * (P + T), (P + T) / 2,
                                                                 head_tokens=B * T), rel=1e-12)
    shared = bw.step_flops(st["student"], st["teacher"], V, B, P, T, prompts=B // G)
    prompt_part = bw.forward_flops(st["teacher"], V, B * P, P / 2, head_tokens=0)
    assert rows["teacher"] - shared["teacher"] == pytest.approx(prompt_part * (G - 1) / G, rel=1e-12)


def test_sft_step_arguments_are_checked_before_any_work():
    import sft_step

    for argv, message in [(["--who", "critic"], r"--who = 'critic': allowed: teacher, student"),
                          (["--task", "chess"], r"--task = 'chess': allowed: math, tooluse"),
                          (["--steps", "0"], r"--steps = 0, --rounds = 3: allowed: both >= 1")]:
        assert re.search(message, _stderr_of(sft_step.parse_args, argv)), argv


@pytest.mark.parametrize("rounds", ["0", "x", "-1", "2.5"])
def test_setup_install_refuses_a_bad_round_count_before_building_anything(rounds):
    import subprocess

    r = subprocess.run(["bash", str(BENCH / "setup_install.sh"), rounds], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and f"rounds must be a positive whole number, got '{rounds}'" in r.stderr


@pytest.mark.parametrize("avx512", [True, False])
def test_gemm_rate_times_every_shape_and_checks_its_bits(capsys, monkeypatch, avx512):
    import gemm_rate

    monkeypatch.setattr(onednn, "_ON_THIS_CPU", avx512)  # which CPUs opdpipe sends to oneDNN: its last column
    assert re.search(r"--seconds = 0.0: allowed: a positive number", _stderr_of(gemm_rate.main, ["--seconds", "0"]))
    assert gemm_rate.main(["--seconds", "0.01"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^\| (\d+) x (\d+) x (\d+) \| (\d+) \| (\d+) \| [\d.]+ \| (\d+) \| (\d+) \|", out, re.M)
    assert [tuple(map(int, r[:3])) for r in rows] == gemm_rate.SHAPES
    assert all(int(rate) > 0 for r in rows for rate in r[3:])
    # one block of inputs (64): oneDNN gives MKL's bits; a 64-row decode projection stays on F.linear
    used = "yes" if avx512 else r"no \(F\.linear: MKL preferred on this CPU\)"
    assert re.search(r"^\| 1984 x 64 x 512 \|.*\| yes \| " + used + r" \|$", out, re.M)
    assert re.search(r"^\| 64 x 64 x 192 \|.*\| no \(F\.linear\) \|$", out, re.M)


def test_compiled_decode_arguments_are_checked_before_any_work():
    import compiled_decode

    for argv, message in [(["--task", "chess"], r"--task = 'chess': allowed: math, tooluse"),
                          (["--rows", "0"], r"--rows = 0, --prompt = 24, --steps = 200, --rounds = 3: allowed: all >= 1")]:
        assert re.search(message, _stderr_of(compiled_decode.parse_args, argv)), argv


def test_the_compiled_decode_benchmark_steps_as_the_fast_path_decodes():
    """Its static-shape step (every cache slot attended, the unused ones masked) gives the fast path's
    next-token logits, so what it times is the rollout's arithmetic."""
    import compiled_decode

    from opdpipe import fastlm
    from opdpipe.models import build_model
    from opdpipe.tokenizer import build_char_tokenizer

    torch.set_num_threads(1)
    tok = build_char_tokenizer()
    spec = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
            "max_position_embeddings": 128}
    net = fastlm._Net.of(build_model(spec, tok, 0))
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, len(tok), (n,), generator=gen).tolist() for n in (5, 9, 7) for _ in range(2)]
    new = 4
    with torch.no_grad():
        last, kv, valid, next_pos = fastlm.prefill(net, prompts, tok.pad_token_id)
        cache = fastlm._DecodeCache(kv, valid, new, net.scale)
        P, tokens = valid.shape[1], net.head(last).argmax(-1)
        rot = net.rope(next_pos[:, None])  # the first decoded position, [B, 1, 1, d/2]
        cache.at = P
        want = net.head(net.layers(net.embed(tokens[:, None]), rot, cache.attend)[:, 0])
        fresh = fastlm._DecodeCache(kv, valid, new, net.scale)  # slots from P on unwritten: zero them
        kt, vc = [t.index_fill(2, torch.arange(P, P + new), 0.0) for t in fresh.kt], \
            [t.index_fill(1, torch.arange(P, P + new), 0.0) for t in fresh.v]
        bias = fresh.bias.index_fill(2, torch.arange(P, P + new), float("-inf"))  # the static form masks them
        step = compiled_decode.make_step(net, len(prompts))
        got = step(tokens, torch.tensor([P]), rot.real[:, 0], rot.imag[:, 0], kt, vc, bias)
    assert (got - want).abs().max() < 1e-5
