"""Supervised fine-tuning on (prompt, response) pairs: next-token loss on response tokens only."""
from __future__ import annotations

import math
import time

import torch

from opdpipe import fastlm, optim

Segments = list[tuple[str, bool]]  # response pieces and whether the loss learns them


def encode_pairs(tokenizer, pairs: list[tuple[str, str | Segments]], max_len: int) -> list[tuple[list[int], list[bool]]]:
    """(prompt, response or [(text, learn)] segments) -> (ids of prompt + response + EOS, learn flags)."""
    out = []
    for prompt, response in pairs:
        segments = [(response, True)] if isinstance(response, str) else response
        ids = tokenizer(prompt)["input_ids"]
        learn = [False] * len(ids)
        for text, flag in segments:
            seg = tokenizer(text)["input_ids"]
            ids, learn = ids + seg, learn + [flag] * len(seg)
        ids, learn = ids + [tokenizer.eos_token_id], learn + [True]
        out.append((ids[:max_len], learn[:max_len]))
    return out


def collate(batch: list[tuple[list[int], list[bool]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded input ids [B, T], attention mask [B, T], and labels [B, T] (-100 where not learned)."""
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, (seq, learn) in enumerate(batch):
        ids[i, :len(seq)] = torch.tensor(seq)
        attn[i, :len(seq)] = 1
        labels[i, :len(seq)] = torch.where(torch.tensor(learn), torch.tensor(seq), torch.tensor(-100))
    return ids, attn, labels


def lr_lambda(warmup: int, total: int, min_ratio: float = 0.1):
    """Linear warm-up then cosine decay to `min_ratio` of the peak."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def loss(model, ids, attn, labels, label_smoothing: float = 0.0, fast: bool | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy over the learned tokens (labels != -100) of a collated batch. The
    embedded models (opdpipe.fastlm; `fast` None: fastlm.supports(model)) run the layers on the rows'
    tokens alone and the head only where a learned token is predicted: the same mean, same positions."""
    fast = fastlm.supports(model) if fast is None else fast
    target = labels[:, 1:]  # position t predicts token t+1
    if fast:
        at = torch.nn.functional.pad(target != -100, (0, 1))
        return torch.nn.functional.cross_entropy(fastlm.logits(model, ids, attn, at).float(), target[at[:, :-1]],
                                                 label_smoothing=label_smoothing)
    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1),
                                             ignore_index=-100, label_smoothing=label_smoothing)


def train_sft(model, tokenizer, pairs: list[tuple[str, str | Segments]], steps: int, batch_size: int, lr: float,
              seed: int, max_len: int = 256, weight_decay: float = 0.0, log_every: int = 50,
              label_smoothing: float = 0.0, log=print) -> dict:
    """Train in place; returns {'loss_first', 'loss_last', 'tokens_per_s', 'wall_s'}."""
    data = encode_pairs(tokenizer, pairs, max_len)
    gen = torch.Generator().manual_seed(seed)
    opt = optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(max(1, steps // 20), steps))
    model.train()
    fast = fastlm.supports(model)
    t0, tokens, losses = time.perf_counter(), 0, []
    for step in range(steps):
        idx = torch.randint(len(data), (batch_size,), generator=gen).tolist()
        ids, attn, labels = (t.to(model.device) for t in collate([data[i] for i in idx], tokenizer.pad_token_id))
        step_loss = loss(model, ids, attn, labels, label_smoothing, fast)
        opt.zero_grad(set_to_none=True)
        step_loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        tokens += int(attn.sum())
        losses.append(step_loss.item())
        if log_every and (step + 1) % log_every == 0:
            log(f"sft step {step + 1}/{steps} loss {sum(losses[-log_every:]) / log_every:.4f}")
    model.eval()
    wall = time.perf_counter() - t0
    return {"loss_first": losses[0], "loss_last": sum(losses[-10:]) / min(10, len(losses)),
            "tokens_per_s": tokens / wall, "wall_s": wall}
