"""On-policy distillation: one training run for one (task, divergence, advantage design, seed).

Per step, in the paper's order: sample prompts; draw G rollouts per prompt from the student
(temperature 1, no truncation); score every response token with the frozen teacher; form
log_u = lp_teacher - lp_student, clip it, turn it into advantages (registries); minimise the
importance-sampling loss over `num_substeps` minibatches with AdamW, gradient clipping and a
learning-rate schedule. Defaults follow the paper: gamma = 0, no advantage normalisation, no
ratio clipping.
"""
from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from opdpipe import bias_meter, checkpoints, distributed, optim, validation
from opdpipe.advantages import compute_advantages, get_design
from opdpipe.backends import accumulate, runtime
from opdpipe.data import load_split
from opdpipe.divergences import check_clip, clip_log_u, get_divergence
from opdpipe.generation import decode_responses, sample
from opdpipe.hparams import DEFAULTS  # the paper's recipe, one visible block
from opdpipe.losses import AGGREGATIONS, policy_loss
from opdpipe.models import load_model, load_trainable, save_checkpoint
from opdpipe.checkpoints import WORK
from opdpipe.provenance import atomic_write_json, atomic_write_text, provenance
from opdpipe.resources import check_world
from opdpipe.scoring import sequence_logprobs, teacher_logprobs
from opdpipe.sft import lr_lambda
from opdpipe.tasks import get_task
from opdpipe.tasks.graders import scorer_for
from opdpipe.tokenizer import load_char_tokenizer, load_tokenizer

SCHEDULES = ("constant", "cosine")
# In-progress state (checkpoints, streamed metrics) lives in <out>/work/ (opdpipe.checkpoints), which no
# workflow declares as an output: a killed job's declared outputs may be deleted, work/ survives to resume.


@dataclass
class RunSpec:
    task: str
    divergence: str
    design: str
    seed: int
    student: str          # SFT-init checkpoint (save_pretrained folder)
    teacher: str          # teacher checkpoint
    data_dir: str         # holds train.jsonl and validation.jsonl
    out_dir: str
    hparams: dict = field(default_factory=dict)
    backend: dict = field(default_factory=dict)  # pretrained models (opdpipe.backends.runtime); {} = embedded

    def cfg(self) -> dict:
        unknown = set(self.hparams) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"opd: unknown key(s) {sorted(unknown)}; allowed: {sorted(DEFAULTS)}")
        return {**DEFAULTS, **self.hparams}


def validate(spec: RunSpec) -> dict:
    """Every check that can fail before the first step."""
    cfg = spec.cfg()
    get_task(spec.task), get_design(spec.design)
    check_clip(get_divergence(spec.divergence), cfg["log_u_clip"])
    if cfg["temperature"] != 1.0:
        raise ValueError(f"opd.temperature = {cfg['temperature']!r}: training rollouts must be sampled at 1.0")
    for key in ("top_k", "top_p"):
        if cfg[key] is not None:
            raise ValueError(f"opd.{key} = {cfg[key]!r}: training rollouts allow no truncation; set it to null")
    if cfg["loss_agg"] not in AGGREGATIONS:
        raise ValueError(f"opd.loss_agg = {cfg['loss_agg']!r}; allowed: {', '.join(AGGREGATIONS)}")
    if cfg["lr_schedule"] not in SCHEDULES:
        raise ValueError(f"opd.lr_schedule = {cfg['lr_schedule']!r}; allowed: {', '.join(SCHEDULES)}")
    if not 0.0 <= cfg["gamma"] <= 1.0:
        raise ValueError(f"opd.gamma = {cfg['gamma']!r}; allowed: [0, 1]")
    batch = cfg["prompts_per_step"] * cfg["group_size"]
    if cfg["num_substeps"] < 1 or batch % cfg["num_substeps"]:
        raise ValueError(f"opd.num_substeps = {cfg['num_substeps']!r} must divide the batch of {batch} rollouts")
    check_world(cfg["world_size"], cfg, "this run")
    if spec.backend and cfg["world_size"] > 1:
        raise ValueError(f"opd.world_size = {cfg['world_size']}: data-parallel training is wired for the embedded "
                         "models only; a pretrained run uses one device (allowed: 1)")
    for key in ("logprob_chunk", "micro_batch_size", "rollout_batch_size"):
        if not isinstance(cfg[key], int) or cfg[key] < 0:
            raise ValueError(f"opd.{key} = {cfg[key]!r}; allowed: 0 (off) or a positive integer")
    for key in ("student", "teacher"):
        if not (Path(getattr(spec, key)) / "config.json").exists():
            raise FileNotFoundError(f"{key} checkpoint {getattr(spec, key)!r} not found (no config.json)")
    if not (Path(spec.data_dir) / "train.jsonl").exists():
        raise FileNotFoundError(f"training prompts {Path(spec.data_dir) / 'train.jsonl'} not found")
    return cfg


def check_compatible(student_tok, teacher_tok, student, teacher) -> None:
    if student_tok.get_vocab() != teacher_tok.get_vocab():
        raise ValueError("student and teacher tokenizers differ; on-policy distillation scores the student's "
                         "tokens with the teacher, so both must share one vocabulary")
    if student.config.vocab_size != teacher.config.vocab_size:
        raise ValueError(f"student vocab_size {student.config.vocab_size} != teacher vocab_size "
                         f"{teacher.config.vocab_size}")


# ---------------------------------------------------------------- one step
def train_step(state: "RunState", cfg: dict) -> dict:
    t0 = time.perf_counter()
    tok, P, G = state.tok, cfg["prompts_per_step"] // state.dist.world_size, cfg["group_size"]  # this rank's share
    idx = torch.randint(len(state.train), (P,), generator=state.gen).tolist()
    prompts = [state.train[i] for i in idx]
    s_ctx = _contexts(state, prompts, "prompt", G)
    try:
        if state.runtime is None:
            roll = sample(state.student, s_ctx, cfg["max_new_tokens"], tok.eos_token_id, tok.pad_token_id,
                          generator=state.gen)
        else:
            with state.runtime.autocast():
                roll = state.runtime.engine.sample(state.student, s_ctx, cfg["max_new_tokens"], tok.eos_token_id,
                                                   tok.pad_token_id, state.rollout_gen)
    except RuntimeError as err:  # torch.multinomial refuses a NaN / inf distribution
        if "probability tensor" not in str(err):
            raise
        _require_finite(state.step + 1, "student's next-token distribution (rollout sampling)", math.nan)
    return learn(state, cfg, prompts, roll, time.perf_counter() - t0)


def learn(state: "RunState", cfg: dict, prompts: list[dict], roll, rollout_s: float = 0.0) -> dict:
    """Score one batch of rollouts (G per prompt) with the teacher and update the student; with
    several ranks, `prompts` and `roll` are this rank's share and gradients are all-reduced."""
    t1 = time.perf_counter()
    tok, G = state.tok, cfg["group_size"]
    batch = [e for e in prompts for _ in range(G)]
    s_ctx = roll.prompt_ids
    t_ctx = _contexts(state, prompts, "teacher_prompt", G) if any("teacher_prompt" in e for e in prompts) \
        else s_ctx  # privileged-context hook: the teacher may see more than the student
    resp, mask = roll.response, roll.mask
    lq = teacher_logprobs(state.teacher, t_ctx, resp, mask, tok.pad_token_id) if state.runtime is None else \
        accumulate.teacher_in_micro_batches(state, cfg, t_ctx, resp, mask)  # [B, T]
    t2 = time.perf_counter()
    minibatches = torch.arange(len(batch)).chunk(cfg["num_substeps"])
    state.student.train()
    if state.runtime is not None:  # autocast, chunked log-probs, micro-batches (opdpipe.backends.accumulate)
        checks = (lambda what, v: _require_finite(state.step + 1, what, v),
                  lambda model: _require_finite_weights(state.step + 1, model))
        return _finish_step(state, cfg, *accumulate.backend_update(state, cfg, s_ctx, resp, mask, lq, minibatches,
                                                                   checks), batch, roll, s_ctx, t_ctx, (rollout_s, t1, t2))
    # one minibatch: its gradient pass at theta_old also gives lp_old (same numbers, one pass fewer)
    learner = state.learner or state.student  # DDP over the student when there are several ranks
    lp_whole = sequence_logprobs(learner, s_ctx, resp, mask, tok.pad_token_id) if len(minibatches) == 1 else None
    if lp_whole is not None:
        lp_old = lp_whole.detach()
    else:
        with torch.no_grad():  # through the learner, as lp_new: with DDP both take transformers' forward
            lp_old = sequence_logprobs(learner, s_ctx, resp, mask, tok.pad_token_id)  # theta_0, [B, T]
    log_u, clip_frac = clip_log_u(lq - lp_old, cfg["log_u_clip"], mask)
    adv, adv_stats = compute_advantages(state.design, state.div, log_u, mask, cfg["gamma"])
    if cfg["normalize_advantages"] and state.dist.active:
        adv = distributed.normalize_advantages(adv, mask)  # statistics of the whole batch
    elif cfg["normalize_advantages"]:
        m = mask.bool()
        adv = torch.where(m, (adv - adv[m].mean()) / (adv[m].std() + 1e-8), adv)
    losses, grad_norms = [], []
    for mb in minibatches:
        lp_new = lp_whole if lp_whole is not None else \
            sequence_logprobs(learner, [s_ctx[i] for i in mb], resp[mb], mask[mb], tok.pad_token_id)
        loss, loss_stats = policy_loss(lp_new, lp_old[mb], adv[mb], mask[mb], cfg["loss_agg"], cfg["clip_ratio"])
        if state.dist.active:  # this rank's share of the global mean: DDP's average is then the whole batch's
            loss = loss * distributed.loss_share(state.dist, cfg["loss_agg"], mask[mb])
        step = state.step + 1
        _require_finite(step, "loss", loss.item())
        state.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norms.append(torch.nn.utils.clip_grad_norm_(state.student.parameters(), cfg["max_grad_norm"]).item())
        _require_finite(step, "gradient norm", grad_norms[-1])
        state.opt.step()
        _require_finite_weights(step, state.student)
        losses.append(loss.item())
    return _finish_step(state, cfg, losses, grad_norms, log_u, clip_frac, adv_stats, loss_stats, batch, roll,
                        s_ctx, t_ctx, (rollout_s, t1, t2))


def _finish_step(state, cfg, losses, grad_norms, log_u, clip_frac, adv_stats, loss_stats, batch, roll, s_ctx,
                 t_ctx, times) -> dict:
    rollout_s, t1, t2 = times
    tok, resp, mask = state.tok, roll.response, roll.mask
    state.sched.step()
    state.student.eval()
    if state.runtime is not None:
        state.runtime.engine.sync(state.student)
    t3 = time.perf_counter()
    n_tok = int(mask.sum())
    texts = decode_responses(tok, roll)
    m = mask.bool()
    metrics = {
        "loss": sum(losses) / len(losses), "grad_norm": sum(grad_norms) / len(grad_norms),
        "log_u/mean": log_u[m].mean().item(), "kl/reverse_est": -log_u[m].mean().item(),
        "f_u/mean": state.div.f(log_u)[m].mean().item(), "log_u/clip_frac": clip_frac, **adv_stats,
        "loss/ratio_clip_frac": loss_stats["loss/ratio_clip_frac"],
        "response/len_mean": mask.sum(-1).float().mean().item(),
        "response/trunc_frac": roll.truncated.float().mean().item(),
        "rollout/acc": sum(state.score(t, e["answer"]) for t, e in zip(texts, batch)) / len(batch),
        "lr": state.sched.get_last_lr()[0], "tokens_per_s": n_tok / (rollout_s + t3 - t1),
        "time/rollout_s": rollout_s, "time/teacher_s": t2 - t1, "time/update_s": t3 - t2,
    }
    state.last_batch = (s_ctx, t_ctx, resp, mask)
    return distributed.reduce_metrics(metrics, state.dist, n_tok)


class NonFiniteError(FloatingPointError):
    """A step produced a NaN or inf: training stops, the last good checkpoint stays, no final/ is written."""


def _require_finite(step: int, quantity: str, value: float) -> None:
    if not math.isfinite(value):
        raise NonFiniteError(f"step {step}: the {quantity} is {value}; training stopped before the update reached "
                             "the weights. The last good checkpoint is kept and no final/ checkpoint is written. "
                             "Lower opd.lr, opd.log_u_clip or opd.max_grad_norm, or pick a milder divergence.")


def _require_finite_weights(step: int, model: torch.nn.Module) -> None:
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise NonFiniteError(f"step {step}: weight {name} became non-finite after the update; training stopped. "
                                 "The last good checkpoint is kept and no final/ checkpoint is written. "
                                 "Lower opd.lr or opd.log_u_clip.")


def _contexts(state, prompts: list[dict], key: str, group_size: int) -> list[list[int]]:
    """Token ids of each prompt's `key` field (falling back to "prompt"), repeated group_size times;
    rendered by the one prompt function (opdpipe.backends.chat) when the models are pretrained."""
    texts = [e.get(key, e["prompt"]) for e in prompts]
    ids = state.tok(texts)["input_ids"] if state.runtime is None else state.runtime.encode(state.tok, texts)
    return [x for x in ids for _ in range(group_size)]


# ---------------------------------------------------------------- state, checkpoints, resume
@dataclass
class RunState:
    student: torch.nn.Module
    teacher: torch.nn.Module
    tok: object
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    gen: torch.Generator
    train: list
    val: list
    score: Callable
    div: object
    design: object
    step: int = 0
    last_batch: tuple | None = None
    dist: distributed.Context = field(default_factory=distributed.Context)
    learner: torch.nn.Module | None = None  # what gradient passes go through (DDP with several ranks)
    runtime: object = None          # opdpipe.backends.runtime.Runtime for pretrained models; None = embedded
    rollout_gen: torch.Generator | None = None  # on the student's device (the CPU: `gen` itself)


def build_state(spec: RunSpec, cfg: dict, found, log, ctx: distributed.Context = distributed.Context()) -> RunState:
    """The run's state: fresh from the SFT-init student, or `found` = checkpoints.load_latest(...)."""
    rt = None
    if spec.backend:  # pretrained models: dtype, device, adapter, chat template (opdpipe.backends)
        torch.manual_seed(spec.seed)  # a fresh LoRA adapter's initialisation draws from the global generator
        student, teacher, tok, rt = runtime.load_pair(spec.student, spec.teacher, spec.backend,
                                                      found[0] if found else None, cfg["rollout_batch_size"], spec.seed)
    else:  # the embedded models, without transformers where fastlm runs every pass (opdpipe.plain_llama)
        tok = load_char_tokenizer(spec.student)
        student = found[0] if found else load_trainable(spec.student, plain=not ctx.active)  # DDP: transformers'
        teacher = load_trainable(spec.teacher, plain=not ctx.active)
        log(f"models: student {type(student).__name__}, teacher {type(teacher).__name__}, "
            f"tokenizer {type(tok).__name__}")
    check_compatible(tok, (load_tokenizer if spec.backend else load_char_tokenizer)(spec.teacher), student, teacher)
    for p in teacher.parameters():
        p.requires_grad_(False)
    torch.manual_seed(spec.seed)
    opt = optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=cfg["lr"],
                      weight_decay=cfg["weight_decay"])
    total = cfg["steps"]
    sched_fn = lr_lambda(cfg["warmup_steps"], total) if cfg["lr_schedule"] == "cosine" else \
        (lambda s: min(1.0, (s + 1) / cfg["warmup_steps"]) if cfg["warmup_steps"] else 1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, sched_fn)
    gen = torch.Generator().manual_seed(distributed.rank_seed(spec.seed, ctx))
    train = load_split(spec.data_dir, "train", log)
    val = load_split(spec.data_dir, "validation", log)[:cfg["eval_size"]]
    state = RunState(student, teacher, tok, opt, sched, gen, train, val, scorer_for(spec.task, train + val),
                     get_divergence(spec.divergence), get_design(spec.design), dist=ctx,
                     learner=distributed.wrap(student, ctx), runtime=rt)
    state.rollout_gen = gen if rt is None or rt.device.type == "cpu" else \
        torch.Generator(device=rt.device).manual_seed(spec.seed)
    if found:
        _, ts, ckpt = found
        if ts.get("world_size", 1) != ctx.world_size:
            raise ValueError(f"checkpoint {ckpt} was written by {ts.get('world_size', 1)} rank(s), this run has "
                             f"{ctx.world_size}: keep opd.world_size, or delete {ckpt.parent.parent} to start over")
        rng = ts["ranks"][ctx.rank] if ctx.active else ts
        opt.load_state_dict(ts["optimizer"]), sched.load_state_dict(ts["scheduler"])
        gen.set_state(rng["generator"]), torch.set_rng_state(rng["torch_rng"]), random.setstate(rng["python_rng"])
        if "rollout_generator" in ts:
            state.rollout_gen.set_state(ts["rollout_generator"])
        state.step = ts["step"]
        log(f"resuming from {ckpt} (step {state.step})")
    return state


def _resume_point(out: Path, metrics_path: Path, log, ctx: distributed.Context = distributed.Context(),
                  load=load_model):
    """The newest readable checkpoint whose streamed metrics are intact, else None (a fresh start).
    Rank 0 alone repairs work/ (sets damaged files aside); the other ranks then read what it kept."""
    found = None
    if ctx.is_main:
        found = checkpoints.load_latest(out, log, load)
        if found and not (checkpoints.restore_metrics(metrics_path, found[1]["step"], log) and
                          validation.resumable(out / WORK / validation.BEST, metrics_path, found[1]["step"], log)):
            checkpoints.discard_all(out, log)
            found = None
    distributed.barrier(ctx)
    if not ctx.is_main:
        found = checkpoints.load_latest(out, log, load)
    steps = distributed.gather(found[1]["step"] if found else 0, ctx)
    if len(set(steps)) > 1:
        raise RuntimeError(f"ranks would resume from different steps {steps}; delete {out / WORK} to start over")
    return found


def _save_checkpoint(state: RunState, out: Path) -> None:
    """Called on every rank (it gathers their random states); rank 0 writes."""
    rngs = distributed.gather({"generator": state.gen.get_state(), "torch_rng": torch.get_rng_state(),
                               "python_rng": random.getstate()}, state.dist)
    if state.dist.is_main:
        extra = {"world_size": state.dist.world_size, "ranks": rngs} if state.dist.active else {}
        if state.rollout_gen is not None and state.rollout_gen is not state.gen:  # a CUDA rollout generator
            extra["rollout_generator"] = state.rollout_gen.get_state()
        checkpoints.save(out, state.student, state.opt, state.sched, state.gen, state.step, extra or None)


# ---------------------------------------------------------------- the run
def run(spec: RunSpec, callbacks: tuple[Callable[[int, dict], None], ...] = (), log=print,
        progress: bool = True) -> dict:
    """Train one variant; returns the summary written to <out_dir>/summary.json."""
    cfg = validate(spec)
    ctx = distributed.context()
    if cfg["world_size"] != ctx.world_size:
        raise ValueError(f"opd.world_size = {cfg['world_size']} but this process is one of {ctx.world_size} rank(s): "
                         "launch it through opdpipe.distributed.launch (torchrun)")
    torch.set_num_threads(cfg["threads"])
    out = Path(spec.out_dir)
    (out / WORK).mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    metrics_path = out / WORK / "metrics.jsonl"
    load = (lambda ckpt: load_trainable(ckpt, plain=not ctx.active)) if not spec.backend else \
        (lambda ckpt: runtime.load_resumed_student(spec.student, ckpt, spec.backend))  # LoRA: adapter only
    state = build_state(spec, cfg, _resume_point(out, metrics_path, log, ctx, load), log, ctx)
    vocab = state.student.config.vocab_size
    best = validation.restored(out / WORK / validation.BEST, metrics_path if state.step and ctx.is_main else None, log)
    if state.step == 0 and ctx.is_main:  # only rank 0 writes metrics, checkpoints, final/ and the summary
        metrics_path.unlink(missing_ok=True)
        best.reset()
        _emit(metrics_path, 0, validation.measure(state, cfg, spec.seed), callbacks)
    bar = tqdm(total=cfg["steps"], initial=state.step, disable=not (progress and ctx.is_main),
               desc=f"{spec.divergence}/{spec.design}")
    totals = {"time/rollout_s": 0.0, "time/teacher_s": 0.0, "time/update_s": 0.0}
    while state.step < cfg["steps"]:
        metrics = train_step(state, cfg)
        state.step += 1
        for k in totals:
            totals[k] += metrics[k]
        if ctx.is_main:
            _record(state, spec, cfg, vocab, metrics, metrics_path, callbacks, best)
        bar.set_postfix(loss=f"{metrics['loss']:.3f}", val=metrics.get("val/greedy_acc", ""))
        bar.update(1)
        if cfg["checkpoint_every"] and state.step % cfg["checkpoint_every"] == 0 and state.step < cfg["steps"]:
            _save_checkpoint(state, out)
            best.prune(checkpoints.checkpoint_dirs(out))
    bar.close()
    if not ctx.is_main:
        return {}
    save = (lambda m, d: save_checkpoint(m, state.tok, d)) if state.runtime is None else \
        (lambda m, d: runtime.save_final(m, state.tok, d))  # a LoRA adapter merged in
    save(state.student, out / "final")
    chosen = validation.finish(best, out, state.step, load, save)  # <out>/best/
    rows = checkpoints.read_stream(metrics_path, log)
    atomic_write_text(out / "metrics.jsonl", metrics_path.read_text())
    summary = {"task": spec.task, "divergence": spec.divergence, "design": spec.design, "seed": spec.seed,
               "config": cfg, "spec": asdict(spec), "final": rows[-1], "steps": state.step,
               "val_greedy_acc": [(r["step"], r["val/greedy_acc"]) for r in rows if "val/greedy_acc" in r],
               "val_avg_at_k": [(r["step"], r[validation.VAL_KEY]) for r in rows if validation.VAL_KEY in r],
               "best": chosen,
               "wall_s": time.perf_counter() - t_start, "time_this_process": totals,
               **provenance({k: v for k, v in asdict(spec).items() if k != "out_dir"} | {"config": cfg}, spec.seed)}
    atomic_write_json(out / "summary.json", summary)
    shutil.rmtree(out / WORK, ignore_errors=True)  # the final checkpoint supersedes it
    return summary


def _record(state: RunState, spec: RunSpec, cfg: dict, vocab: int, metrics: dict, path: Path, callbacks, best) -> None:
    """Rank 0, after each step: validation (and best/) and bias meter when due, then the metrics line and callbacks."""
    if state.step % cfg["eval_every"] == 0 or state.step == cfg["steps"]:
        metrics.update(validation.measure(state, cfg, spec.seed))
        best.consider(state.step, metrics[validation.VAL_KEY], state.student)
    if cfg["bias_every"] and state.step % cfg["bias_every"] == 0:
        metrics.update(_bias(state, spec, cfg, vocab))
    _emit(path, state.step, metrics, callbacks)


def _bias(state: RunState, spec: RunSpec, cfg: dict, vocab: int) -> dict:
    if vocab > cfg["bias_max_vocab"]:
        return {"bias/skipped_vocab": float(vocab)}
    s_ctx, t_ctx, resp, mask = state.last_batch
    n = cfg["bias_rollouts"]
    return bias_meter.measure(state.student, state.teacher, spec.divergence, spec.design, s_ctx[:n], t_ctx[:n],
                              resp[:n], mask[:n], state.tok.pad_token_id, cfg["log_u_clip"], cfg["loss_agg"])


def _emit(path: Path, step: int, metrics: dict, callbacks) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps({"step": step, **metrics}, sort_keys=True) + "\n")
    for cb in callbacks:
        cb(step, metrics)
