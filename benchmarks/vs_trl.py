"""opdpipe's OPD step against TRL's GKD step (fully on-policy) on the same models, batch and thread.

    make bench-env && .venv-bench/bin/python benchmarks/vs_trl.py [--rounds 10] [--warmup 2]

TRL is an optional extra (requirements-bench.txt: trl==1.16.0 beside the project's pins, in its own
.venv-bench); `make test` never needs it.

Both sides, per direction of KL, in one process and one torch thread, interleaved (a TRL step, then
an opdpipe step, round after round), medians over the rounds after `--warmup` untimed ones:
  models  the embedded default's student (hidden 64, 2 layers) and teacher (hidden 96, 3 layers) of
          configs/default.yaml, random-init, saved once with save_pretrained; each side loads the
          same two folders with from_pretrained (float32).
  batch   16 math prompts of the default study x 4 rollouts each (TRL: the collator repeats each of
          its 16 prompts 4 times, so both sample 64 rows from 16 prompts), up to 32 new tokens,
          temperature 1, no top-k / top-p. With random weights the decode loop runs to the budget.
  KL      opdpipe forward_kl = KL(teacher || student) <-> TRL beta = 0; opdpipe reverse_kl =
          KL(student || teacher) <-> TRL beta = 1 (TRL 1.16 generalized_jsd_loss: beta 0 is
          F.kl_div(student_logp, teacher_logp) = KL(teacher || student), beta 1 the other way).
          opdpipe: the plain OPD design (sampled-token log-ratio advantages); TRL: the full-vocabulary
          divergence at every response position.
  update  AdamW, lr 1e-4 (the study's), constant schedule, no weight decay, gradient clipping at 1.0.

What one step includes, timed:
  opdpipe  opdpipe.trainer.train_step (the code `trainer.run` drives, reached through RunSpec /
           validate / build_state): draw 16 prompt indices, tokenize the prompts, sample 64 rollouts
           with opdpipe.generation.sample (KV cache), one no-grad teacher pass over [prompt | response]
           (output head on the response positions only), one student forward + backward (its
           log-probs also serve as the behaviour log-probs), log-ratio clipping, advantages, loss,
           gradient clipping, AdamW step, finite-weight check, lr schedule step, and the step's
           metrics (decoding the 64 responses, grading them, loss statistics). Not included:
           validation, the bias meter and checkpoints (set to never; `trainer.run` does them every
           10-25 steps). At this version the embedded models run these passes through
           opdpipe.fastlm (plain torch, each distinct prompt computed once for its 4 rollouts),
           its larger matmuls through oneDNN where opdpipe.onednn takes it, as the study's runs do.
  TRL      transformers.Trainer's optimizer step from on_step_begin to on_step_end with
           GKDTrainer.training_step: `model.generate` of the 64 rollouts (KV cache), completion
           masks, one student forward and one no-grad teacher forward over the whole sequence (full
           logits), the generalized JSD loss over the vocabulary, backward, gradient clipping, AdamW
           step, lr schedule step, zero_grad. Not included: the data loader's collation (before
           on_step_begin; 16 pre-tokenized prompts). Switched off: evaluation, logging, saving, hub,
           report_to, bf16 (TRL's default; opdpipe runs float32), gradient checkpointing (TRL's
           default; it also turns off the KV cache in generation), any reference model (the teacher
           is the only other model), dropout (none in these models). Its matmuls are torch's
           nn.Linear (MKL), as a TRL user's are.

FLOPs: the work the step needs on each side's own batch shapes (bench_world.step_flops: rollout
prefill + cached decode, teacher scoring, student forward + backward), counted two ways: every row
computing its own prompt (as TRL and transformers' path do), and each of the 16 distinct prompts
once (as opdpipe's fast path, opdpipe.fastlm, does: the least work the step needs), against the
machine's single-thread float32 matmul rate measured here (512^3). TRL's full-sequence logits and
full-vocabulary loss are extra arithmetic not counted.

Kernel classes (`--kernels N`, default 5; 0 skips them): after every direction's rounds (a profiled
run made the next direction's TRL steps ~20% faster here), N more opdpipe steps of each direction run
under torch.profiler (bench_world.kernel_split), giving the step's milliseconds in its matmuls (aten
mm / bmm / addmm and oneDNN's inner product), its attention (the fused scaled-dot-product kernels, forward and backward, and the
decode step's softmax) and torch.multinomial's exponential draws (fixed: the same generator state must
give the same tokens), each operator's own time; one more step under torch's FlopCounterMode counts
the matmuls' FLOPs. They are printed against a step 3x faster than TRL's median: how much of that
budget these kernels alone take, as measured and with every matmul at the 512^3 rate of its library
(oneDNN's, or MKL's with `--matmul mkl`).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

import bench_world as bw
from opdpipe import onednn
from opdpipe.tokenizer import build_char_tokenizer

DIRECTIONS = {"forward_kl": 0.0, "reverse_kl": 1.0}  # opdpipe divergence -> TRL GKD beta


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=bw.DEFAULT_CONFIG)
    p.add_argument("--rounds", type=int, default=10, help="timed rounds per direction (one step of each side)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds per direction")
    p.add_argument("--directions", default="forward_kl,reverse_kl", help="comma-separated: forward_kl, reverse_kl")
    p.add_argument("--matmul", default="onednn", choices=["onednn", "mkl"],
                   help="opdpipe's larger matmuls: its own choice (oneDNN on a non-Intel CPU with AVX-512, else MKL) or MKL (TRL's library)")
    p.add_argument("--kernels", type=int, default=5,
                   help="opdpipe steps profiled after the rounds, for its time by kernel class (0: none)")
    p.add_argument("--workdir", default=None, help="keep the checkpoints and data here (default: a temp dir)")
    args = p.parse_args(argv)
    args.directions = [d for d in args.directions.split(",") if d]
    bad = [d for d in args.directions if d not in DIRECTIONS]
    if bad or not args.directions:
        p.error(f"--directions = {bad or args.directions}: allowed: {', '.join(DIRECTIONS)}")
    if args.rounds < 1 or args.warmup < 0 or args.kernels < 0:
        p.error(f"--rounds = {args.rounds}, --warmup = {args.warmup}, --kernels = {args.kernels}: "
                "allowed: rounds >= 1, warmup >= 0, kernels >= 0")
    return args


def group_collator(pad_id: int, group_size: int):
    """16 pre-tokenized prompts -> 64 left-padded rows (each prompt group_size times), as GKD reads them."""
    def collate(rows):
        seqs = [r["prompt_ids"] for r in rows for _ in range(group_size)]
        width = max(len(s) for s in seqs)
        ids = torch.tensor([[pad_id] * (width - len(s)) + s for s in seqs])
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs])
        return {"prompts": ids, "prompt_attention_mask": mask, "input_ids": ids, "attention_mask": mask}
    return collate


def trl_trainer(world: dict, study: dict, beta: float, steps: int, out: Path, callback):
    """GKDTrainer, fully on-policy (lmbda 1), with everything a step does not need switched off."""
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    from opdpipe.data import load_split
    from opdpipe.models import load_model
    from opdpipe.tokenizer import load_tokenizer

    class Counted(GKDTrainer):  # records its rollout time and the batch it generated (tokens/s, FLOPs)
        def generate_on_policy_outputs(self, model, inputs, generation_config):
            t0 = time.perf_counter()
            out = GKDTrainer.generate_on_policy_outputs(model, inputs, generation_config)
            self.rollout_s = time.perf_counter() - t0
            return out

        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            P = inputs["prompts"].shape[1]
            self.last = {"tokens": int((inputs["labels"] != -100).sum()), "prompt_width": P,
                         "response_width": inputs["input_ids"].shape[1] - P, "rollouts": inputs["input_ids"].shape[0],
                         "rollout_s": self.rollout_s}
            return loss

    hp = study["hparams"]
    tok = load_tokenizer(world["student"])
    prompts = [e["prompt"] for e in load_split(world["data"], "train", log=lambda *a: None)]
    ds = Dataset.from_list([{"prompt_ids": ids} for ids in tok(prompts)["input_ids"]])
    args = GKDConfig(output_dir=str(out), max_steps=steps, per_device_train_batch_size=hp["prompts_per_step"],
                     lmbda=1.0, beta=beta, temperature=1.0, max_new_tokens=hp["max_new_tokens"],
                     learning_rate=hp["lr"], lr_scheduler_type=hp["lr_schedule"], warmup_steps=hp["warmup_steps"],
                     weight_decay=hp["weight_decay"], max_grad_norm=hp["max_grad_norm"], optim="adamw_torch", seed=0,
                     bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True,
                     eval_strategy="no", save_strategy="no", logging_strategy="no", report_to="none",
                     disable_tqdm=True, dataloader_num_workers=0, push_to_hub=False)
    trainer = Counted(model=load_model(world["student"]), teacher_model=load_model(world["teacher"]), args=args,
                      train_dataset=ds, processing_class=tok,
                      data_collator=group_collator(tok.pad_token_id, hp["group_size"]), callbacks=[callback])
    trainer.remove_callback(PrinterCallback)  # prints only the end-of-training summary; nothing per step
    return trainer


def interleaved(world: dict, study: dict, direction: str, rounds: int, warmup: int, out: Path):
    """TRL's step and opdpipe's step, alternating inside TRL's own training loop; the rounds of each side
    and opdpipe's run (to step on)."""
    from transformers import TrainerCallback

    opd = bw.OpdStep(world, study["hparams"], direction, "opd", out / "opd")
    runs = {"opdpipe": [], "trl": []}

    class Alternate(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            s = time.perf_counter() - self.t0
            runs["trl"].append({"s": s, **trainer.last})
            runs["opdpipe"].append(opd())

    trainer = trl_trainer(world, study, DIRECTIONS[direction], rounds + warmup, out / "trl", Alternate())
    torch.set_num_threads(1)
    trainer.train()
    if torch.get_num_threads() != 1:
        raise RuntimeError(f"torch threads changed to {torch.get_num_threads()} during the run")
    return {side: r[warmup:] for side, r in runs.items()}, opd


def summary(runs: list[dict], study: dict, vocab: int, peak: float) -> dict:
    """Medians of one side's rounds; FLOPs counted per row and with each distinct prompt once."""
    s, G = bw.median(r["s"] for r in runs), study["hparams"]["group_size"]

    def flops(shared):
        return bw.median(bw.step_flops(study["student"], study["teacher"], vocab, r["rollouts"], r["prompt_width"],
                                       r["response_width"], r["rollouts"] // G if shared else None)["total"]
                         for r in runs)
    rows, shared = flops(False), flops(True)
    return {"s": s, "tok_s": bw.median(r["tokens"] / r["s"] for r in runs), "tokens": bw.median(r["tokens"] for r in runs),
            "gflop": rows / 1e9, "util": rows / s / 1e9 / peak, "gflop_shared": shared / 1e9,
            "util_shared": shared / s / 1e9 / peak}


def report(direction: str, runs: dict, study: dict, vocab: int, peak: float) -> str:
    rows = {side: summary(r, study, vocab, peak) for side, r in runs.items()}
    paired = bw.median(t["s"] / o["s"] for t, o in zip(runs["trl"], runs["opdpipe"]))
    lines = [f"\n{direction} (TRL beta = {DIRECTIONS[direction]:g}), median of {len(runs['trl'])} interleaved rounds:",
             "| side | s/step | tokens/s | response tokens/step | GFLOP/step (every row / prompts once) "
             "| % of matmul rate (every row / prompts once) |", "|---|---:|---:|---:|---:|---:|"]
    for side in ("opdpipe", "trl"):
        r = rows[side]
        lines.append(f"| {side} | {r['s']:.3f} | {r['tok_s']:.0f} | {r['tokens']:.0f} | {r['gflop']:.2f} / "
                     f"{r['gflop_shared']:.2f} | {100 * r['util']:.1f} / {100 * r['util_shared']:.1f} |")
    split = {k: bw.median(r["split"][k] for r in runs["opdpipe"]) for k in ("rollout", "teacher", "update")}
    trl_roll = bw.median(r["rollout_s"] for r in runs["trl"])
    trl_rest = bw.median(r["s"] - r["rollout_s"] for r in runs["trl"])
    lines.append(f"split (median s): opdpipe rollout {split['rollout']:.3f}, teacher {split['teacher']:.3f}, update "
                 f"{split['update']:.3f}; TRL generate {trl_roll:.3f}, rest (teacher, loss, update) {trl_rest:.3f}")
    lines.append(f"TRL / opdpipe seconds per step: {rows['trl']['s'] / rows['opdpipe']['s']:.2f} (ratio of medians), "
                 f"{paired:.2f} (median of per-round ratios)")
    return "\n".join(lines)


def kernel_report(split: dict, trl_s: float, steps: int, peak: float) -> str:
    """opdpipe's step by kernel class (bench_world.kernel_split) against a step 3x faster than TRL's,
    as measured and with every matmul at `peak` (GFLOP/s), the 512^3 rate of its matmul library."""
    ms = {k: 1e3 * v for k, v in split["s"].items()}
    fixed, budget, wall = sum(ms.values()), 1e3 * trl_s / 3, 1e3 * split["wall"]
    ideal = 1e3 * split["matmul_gflop"] / peak
    floor = ideal + ms["attention"] + ms["sampling draws"]
    rate = split["matmul_gflop"] / max(split["s"]["matmul"], 1e-12)
    parts = ", ".join(f"{k} {v:.1f}" for k, v in ms.items())
    return (f"opdpipe's step by kernel class (torch.profiler, {steps} steps, ms/step): {parts}, everything else "
            f"{wall - fixed:.1f} (wall {wall:.1f}); the matmuls did {split['matmul_gflop']:.2f} GFLOP at {rate:.1f} "
            f"GFLOP/s ({100 * rate / peak:.0f}% of its library's 512^3 rate; {ideal:.1f} ms at that rate).\n"
            f"A step 3x faster than TRL's median takes {budget:.1f} ms. Matmul + attention + sampling draws take "
            f"{fixed:.1f} ms of it ({100 * fixed / budget:.0f}%), leaving {budget - fixed:.1f} ms for everything else; "
            f"with every matmul at that rate they would take {floor:.1f} ms ({100 * floor / budget:.0f}%), "
            f"leaving {budget - floor:.1f} ms.")


def _matmuls(which: str):
    """opdpipe's larger matmuls on oneDNN (its default) or on MKL (TRL's library) inside this block."""
    return onednn.disabled() if which == "mkl" else contextlib.nullcontext()


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' renames (gradient_checkpointing)
    try:
        import trl
    except ImportError:
        sys.exit("benchmarks/vs_trl.py needs TRL: run `make bench-env` and use .venv-bench/bin/python")
    bw.quiet()
    study = bw.default_study(args.config)
    peak = bw.matmul_gflops()
    own = bw.matmul_gflops(mm=onednn._mm) if args.matmul == "onednn" and onednn.available() else peak
    lib = args.matmul if onednn.available() else \
        f"mkl ({'MKL preferred on this CPU' if onednn.built_in() else 'no oneDNN in this torch'}: opdpipe keeps F.linear)"
    print(f"trl {trl.__version__}, torch {torch.__version__}, 1 thread, opdpipe's matmuls: {lib}; "
          f"single-thread float32 matmul (512^3): MKL {peak:.1f}, opdpipe's library {own:.1f} GFLOP/s; "
          f"{study['hparams']['prompts_per_step']} prompts x {study['hparams']['group_size']} "
          f"rollouts, {study['hparams']['max_new_tokens']} new tokens", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.workdir or tmp)
        world = {"data": bw.make_data(root, study["data"], study["seed"]),
                 "student": bw.make_checkpoint(root, "student", study["student"], study["seed"]),
                 "teacher": bw.make_checkpoint(root, "teacher", study["teacher"], study["seed"] + 1)}
        vocab = len(build_char_tokenizer())
        timed = []
        for direction in args.directions:
            with _matmuls(args.matmul):
                runs, opd = interleaved(world, study, direction, args.rounds, args.warmup, root / direction)
            print(report(direction, runs, study, vocab, peak), flush=True)
            timed.append((direction, bw.median(r["s"] for r in runs["trl"]), opd))
        for direction, trl_s, opd in timed if args.kernels else []:  # after every timed round: profiling once
            with _matmuls(args.matmul):
                split = bw.kernel_split(opd, args.kernels)  # made a later direction's TRL steps ~20% faster
            print(f"\n{direction}: " + kernel_report(split, trl_s, args.kernels, own), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
