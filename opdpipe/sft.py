"""Supervised fine-tuning on (prompt, response) pairs: next-token loss on response tokens only."""
from __future__ import annotations

import math
import time

import torch


def encode_pairs(tokenizer, pairs: list[tuple[str, str]], max_len: int) -> list[tuple[list[int], int]]:
    """-> [(prompt + response + EOS ids, prompt length)], truncated to max_len."""
    out = []
    for prompt, response in pairs:
        p = tokenizer(prompt)["input_ids"]
        r = tokenizer(response)["input_ids"] + [tokenizer.eos_token_id]
        out.append(((p + r)[:max_len], len(p)))
    return out


def corrupt(seq: list[int], plen: int, gen: torch.Generator) -> tuple[list[int], int | None]:
    """Replace one response token (not EOS) by another token of the same response.

    Returns the new sequence and the corrupted position. Trained with the loss masked at that
    position, a model learns to continue sensibly after a mistake without learning to make one:
    a teacher that still knows the way from any prefix, as a large pretrained teacher does.
    """
    span = list(range(plen, len(seq) - 1))
    if len(span) < 2:
        return seq, None
    pos = span[int(torch.randint(len(span), (1,), generator=gen))]
    choices = [t for t in set(seq[plen:-1]) if t != seq[pos]]
    if not choices:
        return seq, None
    new = list(seq)
    new[pos] = sorted(choices)[int(torch.randint(len(choices), (1,), generator=gen))]
    return new, pos


def collate(batch: list[tuple[list[int], int]], pad_id: int, noise: float = 0.0,
            gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded input ids [B, T], attention mask [B, T], and labels [B, T] (-100 off the response).

    With `noise` > 0, that fraction of the rows gets one corrupted response token (see `corrupt`).
    """
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, (seq, plen) in enumerate(batch):
        clean, pos = seq, None
        if noise > 0 and float(torch.rand((), generator=gen)) < noise:
            seq, pos = corrupt(seq, plen, gen)
        ids[i, :len(seq)] = torch.tensor(seq)
        attn[i, :len(seq)] = 1
        labels[i, plen:len(seq)] = torch.tensor(clean[plen:])
        if pos is not None:
            labels[i, pos] = -100  # never learn to produce the corruption itself
    return ids, attn, labels


def lr_lambda(warmup: int, total: int, min_ratio: float = 0.1):
    """Linear warm-up then cosine decay to `min_ratio` of the peak."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def train_sft(model, tokenizer, pairs: list[tuple[str, str]], steps: int, batch_size: int, lr: float,
              seed: int, max_len: int = 256, weight_decay: float = 0.0, log_every: int = 50,
              noise: float = 0.0, log=print) -> dict:
    """Train in place; returns {'loss_first', 'loss_last', 'tokens_per_s', 'wall_s'}."""
    data = encode_pairs(tokenizer, pairs, max_len)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(max(1, steps // 20), steps))
    model.train()
    t0, tokens, losses = time.perf_counter(), 0, []
    for step in range(steps):
        idx = torch.randint(len(data), (batch_size,), generator=gen).tolist()
        ids, attn, labels = collate([data[i] for i in idx], tokenizer.pad_token_id, noise, gen)
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        tokens += int(attn.sum())
        losses.append(loss.item())
        if log_every and (step + 1) % log_every == 0:
            log(f"sft step {step + 1}/{steps} loss {sum(losses[-log_every:]) / log_every:.4f}")
    model.eval()
    wall = time.perf_counter() - t0
    return {"loss_first": losses[0], "loss_last": sum(losses[-10:]) / min(10, len(losses)),
            "tokens_per_s": tokens / wall, "wall_s": wall}
