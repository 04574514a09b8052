"""The embedded models' forward pass in plain torch: the fast path of rollouts, scoring and updates.

The same math as transformers' LlamaForCausalLM (RMSNorm, rotary positions, causal attention over
left-padded rows, SwiGLU MLP, output head), run on the HF module's own parameters: gradients reach
the module, and checkpoints stay `save_pretrained` folders. Two savings, both exact up to float
rounding (tests/test_fastlm.py holds them to the reference path within 1e-5):
- no per-call framework work (mask builders, cache objects, output classes): a decode step is a
  few dozen kernels;
- a prompt shared by the G rollouts of a group runs once: its keys and values are computed for the
  distinct prompts and gathered per row, in rollouts, teacher scoring and the update alike (the
  gradient through a shared prompt sums over its rows, as it does when every row recomputes it).
Its larger float32 matrix multiplies go through oneDNN (opdpipe.onednn: the CPU's widest vector
unit; about twice MKL's rate on an AVX-512 AMD CPU), in the gradient too. Models it does not cover
(other architectures, grouped-query attention, biases, scaled rotary positions, attention dropout,
weights other than float32, gradient checkpointing, a DDP or LoRA wrapper) take the reference path:
`supports(model)` decides.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from opdpipe.onednn import linear
from opdpipe.toggles import Toggle

_SWITCH = Toggle()


def disabled():
    """Run the reference (transformers) path inside this block: for tests and before/after benchmarks."""
    return _SWITCH.disabled()


def supports(model) -> bool:
    """True for the embedded Llama models this module computes exactly: a bare LlamaForCausalLM (no
    DDP or LoRA wrapper) in float32, without the config features this forward leaves out."""
    from transformers import LlamaForCausalLM

    if not _SWITCH.on or type(model) is not LlamaForCausalLM or getattr(model, "peft_config", None):
        return False
    c = model.config
    rope = getattr(c, "rope_parameters", None) or {}
    return (c.hidden_act == "silu" and not c.attention_bias and not getattr(c, "mlp_bias", False)
            and c.num_key_value_heads == c.num_attention_heads and rope.get("rope_type", "default") == "default"
            and getattr(c, "head_dim", c.hidden_size // c.num_attention_heads) * c.num_attention_heads == c.hidden_size
            and getattr(c, "pretraining_tp", 1) == 1 and not getattr(c, "attention_dropout", 0.0)
            and not _checkpointed(model)
            and all(p.dtype == torch.float32 for p in model.parameters()))


def _checkpointed(model) -> bool:
    """Activation (gradient) checkpointing on: transformers >= 5.24 names it `is_activation_checkpointing`."""
    on = getattr(model, "is_activation_checkpointing", None)
    return bool(on if on is not None else getattr(model, "is_gradient_checkpointing", False))


@dataclass
class _Net:
    """One call's view of the model: its parameters (fused where that saves kernels) and rotary table."""
    model: torch.nn.Module
    heads: int
    head_dim: int
    eps: float
    inv_freq: torch.Tensor
    blocks: list  # per layer: (ln1, qkv [3D, D], o, ln2, gate_up [2I, D], down)

    @classmethod
    def of(cls, model) -> "_Net":
        c = model.config
        d = c.hidden_size // c.num_attention_heads
        base = c.rope_parameters["rope_theta"]
        inv_freq = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.float) / d))
        blocks = []
        for layer in model.model.layers:  # torch.cat is differentiable: gradients reach every projection
            a, mlp = layer.self_attn, layer.mlp
            blocks.append((layer.input_layernorm.weight,
                           torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]), a.o_proj.weight,
                           layer.post_attention_layernorm.weight,
                           torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]), mlp.down_proj.weight))
        return cls(model, c.num_attention_heads, d, c.rms_norm_eps, inv_freq, blocks)

    def rope(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [B, 1, L, d] of positions [B, L], the sign of rotate_half folded into sin."""
        freqs = pos[..., None].float() * self.inv_freq.to(pos.device)
        half = freqs.shape[-1]
        emb = torch.cat((freqs, freqs), dim=-1)[:, None]
        sign = torch.cat([-torch.ones(half, device=pos.device), torch.ones(half, device=pos.device)])
        return emb.cos(), emb.sin() * sign

    def head(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        return linear(F.rms_norm(x, x.shape[-1:], m.model.norm.weight, self.eps), m.lm_head.weight)

    def layers(self, x, rope, mask, past=None, cache=None, at: int = 0):
        """Run every decoder layer over x [B, L, D] with rotary tables `rope` (self.rope of the positions).

        mask [B, 1, L, K] (True = attend) covers the keys: `past[i]` (k, v) of earlier positions, then
        these L. With `cache` (preallocated [B, H, K, d] per layer), the new keys go to slots at..at+L-1
        and attention reads slots 0..at+L-1. Returns x and the new (k, v) per layer."""
        cos, sin = rope
        B, L, D = x.shape
        new = []
        for i, (ln1, qkv, o_w, ln2, gate_up, down) in enumerate(self.blocks):
            h = F.rms_norm(x, (D,), ln1, self.eps)
            qkv_h = linear(h, qkv).view(B, L, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
            qk = qkv_h[:2] * cos + _swap_halves(qkv_h[:2]) * sin  # rotary positions on q and k at once
            q, k, v = qk[0], qk[1], qkv_h[2]
            new.append((k, v))
            if cache is not None:
                cache[i][0][:, :, at:at + L], cache[i][1][:, :, at:at + L] = k, v
                k, v = cache[i][0][:, :, :at + L], cache[i][1][:, :, :at + L]
            elif past is not None:
                k, v = torch.cat([past[i][0], k], dim=2), torch.cat([past[i][1], v], dim=2)
            o = _attend(q, k, v, mask, self.head_dim ** -0.5)
            x = x + linear(o.transpose(1, 2).reshape(B, L, D), o_w)
            gu = linear(F.rms_norm(x, (D,), ln2, self.eps), gate_up)
            g, u = gu.chunk(2, dim=-1)
            x = x + linear(F.silu(g) * u, down)
        return x, new

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        e = self.model.model.embed_tokens  # padding_idx: the padding row gets no gradient, as in nn.Embedding
        return F.embedding(ids, e.weight, e.padding_idx)


def _attend(q, k, v, mask, scale):
    """Scaled dot-product attention; one query per row (decoding) as two small batched matmuls,
    which beats the fused CPU kernel at that shape."""
    if q.shape[2] > 1:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    w = (q @ k.transpose(-1, -2)).mul_(scale).masked_fill_(~mask, float("-inf"))
    return torch.softmax(w, dim=-1) @ v


def _swap_halves(x: torch.Tensor) -> torch.Tensor:
    """rotate_half without its sign (folded into the sine table): [x2, x1]."""
    half = x.shape[-1] // 2
    return torch.cat((x[..., half:], x[..., :half]), dim=-1)


def distinct(contexts: list[list[int]]) -> tuple[list[list[int]], torch.Tensor]:
    """The distinct contexts (first-seen order) and, per row, the index of its context."""
    seen: dict[tuple, int] = {}
    rows = [seen.setdefault(tuple(c), len(seen)) for c in contexts]
    return [list(c) for c in seen], torch.tensor(rows, dtype=torch.long)


def _prompt_mask(valid: torch.Tensor) -> torch.Tensor:
    """[U, 1, P, P] causal attention over left-padded prompts; a padding query sees itself only
    (its output is never used, and a row with no key would give NaN)."""
    P = valid.shape[1]
    causal = torch.ones(P, P, dtype=torch.bool, device=valid.device).tril()
    eye = torch.eye(P, dtype=torch.bool, device=valid.device)
    return ((causal & valid[:, None, :]) | eye)[:, None]


def prefill(net: _Net, contexts: list[list[int]], pad_id: int):
    """Run the distinct left-padded contexts once. Returns (last hidden state per row [B, D],
    per-layer (k, v) per row [B, H, P, d], key validity per row [B, P], next position per row [B])."""
    from opdpipe.generation import left_pad

    dev = net.model.model.embed_tokens.weight.device
    uniq, rows = distinct(contexts)
    ids, attn = (t.to(dev) for t in left_pad(uniq, pad_id))
    rows = rows.to(dev)
    pos = (attn.cumsum(-1) - 1).clamp_min(0)
    valid = attn.bool()
    x, kv = net.layers(net.embed(ids), net.rope(pos), _prompt_mask(valid))
    per_row = _per_row(rows, len(uniq))
    kv = [(per_row(k), per_row(v)) for k, v in kv]
    return per_row(x[:, -1]), kv, per_row(valid), per_row(pos[:, -1]) + 1


def _per_row(rows: torch.Tensor, U: int):
    """t [U, ...] -> t[rows] [B, ...]. When the rows are the U contexts in order, each repeated B / U
    times (the G rollouts of each prompt), by expand, whose gradient sums each context's rows in one
    pass (index_select's scatters them one by one, slowly from a strided gradient); otherwise by
    index_select. Both give the same values and the same gradient."""
    B = rows.shape[0]
    if B % U or not torch.equal(rows, torch.arange(U, device=rows.device).repeat_interleave(B // U)):
        return lambda t: t.index_select(0, rows)
    return lambda t: t.unsqueeze(1).expand(U, B // U, *t.shape[1:]).reshape(B, *t.shape[1:])


def response_logprobs(model, context_ids: list[list[int]], response: torch.Tensor, response_mask: torch.Tensor,
                      pad_id: int) -> torch.Tensor:
    """Sampled-token log-probs [B, T] of `response` after each row's context (gradients flow if
    enabled); the prompt part runs once per distinct context. Masked positions are not zeroed here."""
    from opdpipe.scoring import token_logprobs

    net = _Net.of(model)
    last, kv, valid, start = prefill(net, context_ids, pad_id)
    B, T = response.shape
    if T == 1:
        h = last[:, None]
    else:
        ids = torch.where(response_mask.bool(), response, torch.full_like(response, pad_id))[:, :T - 1]
        pos = start[:, None] + torch.arange(T - 1, device=response.device)
        causal = torch.ones(T - 1, T - 1, dtype=torch.bool, device=response.device).tril()
        mask = torch.cat([valid[:, None, :].expand(B, T - 1, -1), causal.expand(B, -1, -1)], dim=2)[:, None]
        x, _ = net.layers(net.embed(ids), net.rope(pos), mask, past=kv)
        h = torch.cat([last[:, None], x], dim=1)
    return token_logprobs(net.head(h).float(), response)


def logits(model, ids: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """model(input_ids=ids, attention_mask=attn).logits [B, L, V] of right-padded rows (SFT batches):
    positions 0..L-1, a padding key never attended (a padding query still sees the row's tokens)."""
    net = _Net.of(model)
    B, L = ids.shape
    causal = torch.ones(L, L, dtype=torch.bool, device=ids.device).tril()
    mask = (causal[None] & attn.bool()[:, None, :])[:, None]
    x, _ = net.layers(net.embed(ids), net.rope(torch.arange(L, device=ids.device).expand(B, -1)), mask)
    return net.head(x)


@torch.no_grad()
def sample(model, prompt_ids: list[list[int]], max_new_tokens: int, eos_id: int, pad_id: int,
           greedy: bool = False, generator: torch.Generator | None = None):
    """generation.sample on the fast path: the same draws from the same generator, one prefill per
    distinct prompt, a preallocated key/value cache."""
    from opdpipe.generation import decode

    net = _Net.of(model)
    last, kv, valid, next_pos = prefill(net, prompt_ids, pad_id)
    B, P = valid.shape
    dev = valid.device
    cache = []
    for k, v in kv:
        ck, cv = (torch.empty(B, net.heads, P + max_new_tokens, net.head_dim, dtype=k.dtype, device=dev)
                  for _ in range(2))
        ck[:, :, :P], cv[:, :, :P] = k, v
        cache.append((ck, cv))
    keys = torch.cat([valid, torch.ones(B, max_new_tokens, dtype=torch.bool, device=dev)], dim=1)
    cos, sin = net.rope(next_pos[:, None] + torch.arange(max_new_tokens, device=dev))  # every decoding position

    def step(tok: torch.Tensor, t: int) -> torch.Tensor:
        x, _ = net.layers(net.embed(tok[:, None]), (cos[:, :, t:t + 1], sin[:, :, t:t + 1]),
                          keys[:, None, None, :P + t + 1], cache=cache, at=P + t)
        return net.head(x[:, 0])

    return decode(prompt_ids, net.head(last), step, max_new_tokens, eos_id, pad_id, greedy, generator)
