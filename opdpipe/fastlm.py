"""The embedded models' forward pass in plain torch: the fast path of rollouts, scoring and updates.

The same math as transformers' LlamaForCausalLM (RMSNorm, rotary positions, causal attention over
left-padded rows, SwiGLU MLP, output head), run on the HF module's own parameters: gradients reach
the module, and checkpoints stay `save_pretrained` folders. Three savings, all exact up to float
rounding (tests/test_fastlm.py and tests/test_packing.py hold them to the reference path within 1e-5):
- no per-call framework work (mask builders, cache objects, output classes), and few kernels per
  layer: rotary positions as one complex multiply, RMSNorm weights folded into the projections, a
  decoding step's attention as two batched matmuls over a flat preallocated cache;
- a prompt shared by the G rollouts of a group runs once: its keys and values are computed for the
  distinct prompts and joined to each row's own, in rollouts, teacher scoring and the update alike
  (the gradient through a shared prompt sums over its rows, as it does when every row recomputes it);
- the prompts' prefill, the teacher's scoring, the update's forward and the SFT loss run the
  position-wise work (norms, projections, MLP, head) on a batch's tokens alone, not on the padding
  that no token attends: a quarter of an OPD batch's response positions, up to a tenth of its
  prompts', 4-14% of an SFT batch's (_Packed).
- the training passes (SFT, the OPD update) write the gradients of the SwiGLU gate and of the
  attention's heads into one tensor each instead of joining zero-filled parts (opdpipe.fused), and
  the SFT loss of right-padded rows attends with the causal flag alone: the same bits, fewer passes.
Its larger float32 matrix multiplies go through oneDNN on non-Intel CPUs with AVX-512 (opdpipe.onednn:
about twice MKL's rate on an AVX-512 AMD CPU), in the gradient too. Models it does not cover
(other architectures, grouped-query attention, biases, scaled rotary positions, attention dropout,
weights other than float32, gradient checkpointing, a DDP or LoRA wrapper) take the reference path:
`supports(model)` decides.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from opdpipe.fused import split_heads, swiglu
from opdpipe.onednn import linear
from opdpipe.plain_llama import PlainLlama
from opdpipe.toggles import Toggle

_SWITCH = Toggle()
_PACK = Toggle()  # passes on a batch's tokens alone (off: every position of the padded layout)


def disabled():
    """Run the reference (transformers) path inside this block: for tests and before/after benchmarks."""
    return _SWITCH.disabled()


def every_position():
    """Every pass over every position of its padded layout inside this block (the passes before they
    left the padding out): for tests and before/after benchmarks."""
    return _PACK.disabled()


def enabled() -> bool:
    """False inside `disabled()`."""
    return _SWITCH.on


def supports(model) -> bool:
    """True for the embedded Llama models this module computes exactly: a PlainLlama (its folder was
    checked when read), or a bare LlamaForCausalLM (no DDP or LoRA wrapper) in float32, without the
    config features this forward leaves out."""
    if type(model) is PlainLlama:
        return _SWITCH.on
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
    """One call's view of the model: its parameters (fused where that saves kernels) and rotary table.

    Rotary positions rotate pairs of a head's query and key dimensions (i, i + d/2) by a complex factor;
    the fused q and k rows put each pair side by side, so that one complex multiply rotates them. The
    same reordering of q and k leaves every attention score q.k unchanged (the sum runs in another
    order); v and the output are not reordered. Each RMSNorm's weight is folded into the projection
    that reads it (linear(norm(x) * w, W) = linear(norm(x), W * w)): one elementwise pass fewer per
    norm, forward and backward; the gradient still reaches both weights."""
    model: torch.nn.Module
    heads: int
    head_dim: int
    eps: float
    inv_freq: torch.Tensor
    blocks: list  # per layer: (qkv [3D, D], o, gate_up [2I, D], down), the norms' weights folded in
    out: torch.Tensor  # the output head [V, D], the final norm's weight folded in

    @classmethod
    def of(cls, model) -> "_Net":
        c = model.config
        d = c.hidden_size // c.num_attention_heads
        base = c.rope_parameters["rope_theta"]
        inv_freq = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.float) / d))
        pairs = _pair_rows(c.num_attention_heads, d, model.model.embed_tokens.weight.device)
        blocks = []
        for layer in model.model.layers:  # cat and indexing are differentiable: gradients reach every projection
            a, mlp = layer.self_attn, layer.mlp
            qkv = torch.cat([a.q_proj.weight[pairs], a.k_proj.weight[pairs], a.v_proj.weight])
            gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])
            blocks.append((qkv * layer.input_layernorm.weight, a.o_proj.weight,
                           gate_up * layer.post_attention_layernorm.weight, mlp.down_proj.weight))
        return cls(model, c.num_attention_heads, d, c.rms_norm_eps, inv_freq, blocks,
                   model.lm_head.weight * model.model.norm.weight)

    @property
    def scale(self) -> float:
        return self.head_dim ** -0.5

    def rope(self, pos: torch.Tensor) -> torch.Tensor:
        """The rotations [B, 1, L, d/2] (complex: cos + i sin) of positions [B, L]."""
        freqs = pos[..., None].float() * self.inv_freq.to(pos.device)
        return torch.polar(torch.ones_like(freqs), freqs)[:, None]

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        """RMSNorm without its weight (folded into the next projection)."""
        return F.rms_norm(x, x.shape[-1:], None, self.eps)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return linear(self.norm(x), self.out)

    def layers(self, x, rot, attend, packed: "_Packed | None" = None):
        """Run every decoder layer over x [B, L, D] with the rotations `rot` (self.rope of the positions);
        `attend(i, q, k, v)` ([B, H, L, d] each, q and k rotated) is layer i's attention, [B, L, D].
        With `packed`, x holds only the positions that matter, [N, D] (see _Packed): the projections,
        norms and MLP run on those alone, and attention on the [B, L] layout they are placed back into."""
        for i, (qkv, o_w, gate_up, down) in enumerate(self.blocks):
            h = linear(self.norm(x), qkv)
            if packed is not None:
                h = packed.spread(h)
            a = attend(i, *split_heads(h, rot, self.heads))  # rotary positions on q and k at once
            x = x + linear(a if packed is None else packed.pick(a), o_w)
            x = x + linear(swiglu(linear(self.norm(x), gate_up)), down)
        return x

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        e = self.model.model.embed_tokens  # padding_idx: the padding row gets no gradient, as in nn.Embedding
        return F.embedding(ids, e.weight, e.padding_idx)


def _pair_rows(heads: int, d: int, device) -> torch.Tensor:
    """The q / k projection rows in rotary pairs: per head, dimensions (i, i + d/2) side by side."""
    half = torch.arange(d // 2, device=device)
    per_head = torch.stack([half, half + d // 2], dim=1).flatten()
    return (torch.arange(heads, device=device)[:, None] * d + per_head).flatten()


def _full_attention(mask: torch.Tensor | None, scale: float, past=None, keep: list | None = None):
    """Attention over whole rows: mask [B, 1, L, K] (True = attend) covers `past[i]` (k, v) of earlier
    positions (prefill's, shared by groups of rows), then these L; `keep` collects each layer's new (k, v).
    mask None: causal over these L alone (no past)."""
    def attend(i, q, k, v):
        if keep is not None:
            keep.append((k, v))
        if past is not None:
            k, v = _with_past(past[i][0], k), _with_past(past[i][1], v)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                              scale=scale).transpose(1, 2).flatten(2)
    return attend


class _DecodeCache:
    """Every layer's keys and values for decoding one position per row, preallocated for the whole
    budget, flat over rows and heads: keys transposed [B*H, d, K], values [B*H, K, d], and the mask as
    an additive bias [B*H, 1, K] (0 or -inf). A decoding step's attention is then two batched matmuls
    and a softmax over strided views: no copy of the cache, no mask op."""

    def __init__(self, kv, valid: torch.Tensor, new: int, scale: float):
        C, H, P, d = kv[0][0].shape  # C contexts, each shared by G consecutive rows (prefill)
        B, K = valid.shape[0], P + new
        G = B // C
        self.kt = [k.new_empty(B * H, d, K) for k, _ in kv]
        self.v = [v.new_empty(B * H, K, d) for _, v in kv]
        for (k, v), kt, vc in zip(kv, self.kt, self.v):
            kt.view(C, G, H, d, K)[..., :P] = k.transpose(-1, -2)[:, None]
            vc.view(C, G, H, K, d)[..., :P, :] = v[:, None]
        keys = torch.cat([valid, valid.new_ones(B, new)], dim=1)
        self.bias = torch.zeros(B, H, 1, K, device=valid.device).masked_fill_(~keys[:, None, None], float("-inf"))
        self.bias = self.bias.view(B * H, 1, K)
        self.scale, self.at = scale, P

    def attend(self, i, q, k, v):
        """Layer i's attention of one new position per row (slot self.at), [B, 1, D]."""
        B, H, _, d = q.shape
        at, kt, vc = self.at, self.kt[i], self.v[i]
        kt.view(B, H, d, -1)[..., at] = k[:, :, 0]
        vc.view(B, H, -1, d)[:, :, at] = v[:, :, 0]
        w = torch.baddbmm(self.bias[..., :at + 1], q.reshape(B * H, 1, d), kt[..., :at + 1], alpha=self.scale)
        return torch.bmm(torch.softmax(w, dim=-1), vc[:, :at + 1]).view(B, 1, H * d)


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
    per-layer (k, v) [C, H, P, d], key validity per row [B, P], next position per row [B]). C = U when
    the rows are the U contexts in order, each repeated B / U times (the G rollouts of each prompt):
    each context's keys and values once, for its consecutive rows (_with_past, _DecodeCache); else C = B."""
    from opdpipe.generation import left_pad

    dev = net.model.model.embed_tokens.weight.device
    uniq, rows = distinct(contexts)
    ids, attn = (t.to(dev) for t in left_pad(uniq, pad_id))
    rows = rows.to(dev)
    pos = (attn.cumsum(-1) - 1).clamp_min(0)
    valid = attn.bool()
    kv = []
    attend = _full_attention(_prompt_mask(valid), net.scale, keep=kv)
    if _PACK.on:  # the prompts' tokens alone; the padding's keys and values are zeros, masked for every row
        tokens = _Packed.of(valid)
        x = tokens.spread(net.layers(net.embed(tokens.pick(ids)), net.rope(pos), attend, packed=tokens))
    else:
        x = net.layers(net.embed(ids), net.rope(pos), attend)
    G = _groups(rows, len(uniq))
    per_row = _per_row(rows, len(uniq), G)
    if G is None:
        kv = [(per_row(k), per_row(v)) for k, v in kv]
    return per_row(x[:, -1]), kv, per_row(valid), per_row(pos[:, -1]) + 1


def _groups(rows: torch.Tensor, U: int) -> int | None:
    """G when the rows are the U contexts in order, each repeated G times; else None."""
    B = rows.shape[0]
    if B % U or not torch.equal(rows, torch.arange(U, device=rows.device).repeat_interleave(B // U)):
        return None
    return B // U


def _per_row(rows: torch.Tensor, U: int, G: int | None):
    """t [U, ...] -> t[rows] [B, ...]. When the rows are the U contexts in order, each repeated G times
    (_groups), by expand, whose gradient sums each context's rows in one pass (index_select's scatters
    them one by one, slowly from a strided gradient); otherwise (G None) by index_select. Both give
    the same values and the same gradient."""
    if G is None:
        return lambda t: t.index_select(0, rows)
    return lambda t: t.unsqueeze(1).expand(U, G, *t.shape[1:]).reshape(U * G, *t.shape[1:])


def _with_past(past: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """[past | new] keys or values of each row along the positions: past [C, H, P, d] shared by the
    B / C consecutive rows of each context (prefill), new [B, H, L, d]. One copy: the shared part is
    read through an expanded view, not copied per row first (its gradient sums over the rows)."""
    C, B = past.shape[0], new.shape[0]
    grouped = past.unsqueeze(1).expand(C, B // C, *past.shape[1:])
    return torch.cat([grouped, new.unflatten(0, (C, B // C))], dim=3).flatten(0, 1)


@dataclass
class _Packed:
    """The positions of a [B, L] layout that matter (`keep`, True where needed), as rows of a packed
    [N, ...] tensor: position-wise work (projections, norms, MLP, head) runs on the N alone."""
    keep: torch.Tensor  # [B, L] bool
    index: torch.Tensor  # [N] flat positions b * L + l of the kept ones

    @classmethod
    def of(cls, keep: torch.Tensor) -> "_Packed":
        return cls(keep, keep.flatten().nonzero().squeeze(-1))

    def pick(self, t: torch.Tensor) -> torch.Tensor:
        """[B, L, ...] -> [N, ...]"""
        return t.flatten(0, 1).index_select(0, self.index)

    def spread(self, t: torch.Tensor) -> torch.Tensor:
        """[N, ...] -> [B, L, ...], zeros where not kept."""
        B, L = self.keep.shape
        return t.new_zeros(B * L, *t.shape[1:]).index_copy(0, self.index, t).unflatten(0, (B, L))


def response_logprobs(model, context_ids: list[list[int]], response: torch.Tensor, response_mask: torch.Tensor,
                      pad_id: int) -> torch.Tensor:
    """Sampled-token log-probs [B, T] of `response` after each row's context (gradients flow if
    enabled); the prompt part runs once per distinct context. Only the response tokens (mask 1) are
    computed, 0 elsewhere: a row's later positions are padding that no response token attends, so the
    layers' position-wise work and the head run on the tokens alone (every_position() turns it off)."""
    from opdpipe.scoring import token_logprobs

    if not _PACK.on:
        return token_logprobs(response_logits(model, context_ids, response, response_mask, pad_id), response)
    net, keep = _Net.of(model), response_mask.bool()
    logp = token_logprobs(net.head(_response_states(net, context_ids, response, keep, pad_id)).float(), response[keep])
    return logp.new_zeros(response.shape).masked_scatter(keep, logp)


def response_logits(model, context_ids: list[list[int]], response: torch.Tensor, response_mask: torch.Tensor,
                    pad_id: int) -> torch.Tensor:
    """Float32 logits [B, T, V] predicting each response token after its row's context, at every
    position (the bias meter's full distributions)."""
    net = _Net.of(model)
    return net.head(_response_states(net, context_ids, response, response_mask.bool(), pad_id, packed=False)).float()


def _response_states(net: _Net, context_ids: list[list[int]], response: torch.Tensor, keep: torch.Tensor,
                     pad_id: int, packed: bool = True) -> torch.Tensor:
    """The last layer's states that predict each response token: [N, D] at the tokens alone (keep
    [B, T], row-major), or with packed=False [B, T, D] at every position."""
    last, kv, valid, start = prefill(net, context_ids, pad_id)
    B, T = response.shape
    h = last[:, None]
    if T > 1:  # input t of the response feeds the prediction of token t + 1
        pos = start[:, None] + torch.arange(T - 1, device=response.device)
        causal = torch.ones(T - 1, T - 1, dtype=torch.bool, device=response.device).tril()
        mask = torch.cat([valid[:, None, :].expand(B, T - 1, -1), causal.expand(B, -1, -1)], dim=2)[:, None]
        attend = _full_attention(mask, net.scale, past=kv)
        if packed:
            inputs = _Packed.of(keep[:, 1:])
            x = inputs.spread(net.layers(net.embed(inputs.pick(response[:, :T - 1])), net.rope(pos), attend,
                                         packed=inputs))
        else:
            ids = torch.where(keep, response, torch.full_like(response, pad_id))[:, :T - 1]
            x = net.layers(net.embed(ids), net.rope(pos), attend)
        h = torch.cat([h, x], dim=1)
    return h[keep] if packed else h


def logits(model, ids: torch.Tensor, attn: torch.Tensor, at: torch.Tensor | None = None) -> torch.Tensor:
    """model(input_ids=ids, attention_mask=attn).logits [B, L, V] of right-padded rows (SFT batches):
    positions 0..L-1, a padding key never attended (a padding query still sees the row's tokens).
    With `at` ([B, L] bool, within attn), only the logits at those positions, [N, V] in row-major
    order, and the layers' position-wise work runs on the rows' tokens alone (none attends padding).
    Right-padded rows read at `at` need no padding mask: a token's earlier positions are all tokens,
    and what a padding position computes is never read (the causal flag alone gives the same bits)."""
    net = _Net.of(model)
    B, L = ids.shape
    mask = None
    if at is None or not _right_padded(attn):
        causal = torch.ones(L, L, dtype=torch.bool, device=ids.device).tril()
        mask = (causal[None] & attn.bool()[:, None, :])[:, None]
    rot, attend = net.rope(torch.arange(L, device=ids.device).expand(B, -1)), _full_attention(mask, net.scale)
    if at is None or not _PACK.on:
        x = net.layers(net.embed(ids), rot, attend)
        return net.head(x if at is None else x[at])
    tokens = _Packed.of(attn.bool())
    x = net.layers(net.embed(tokens.pick(ids)), rot, attend, packed=tokens)
    return net.head(tokens.spread(x)[at])


def _right_padded(attn: torch.Tensor) -> bool:
    """Each row's tokens first, then its padding."""
    return bool((attn[:, 1:] <= attn[:, :-1]).all())


@torch.no_grad()
def sample(model, prompt_ids: list[list[int]], max_new_tokens: int, eos_id: int, pad_id: int,
           greedy: bool = False, generator: torch.Generator | None = None):
    """generation.sample on the fast path: the same draws from the same generator, one prefill per
    distinct prompt, a preallocated key/value cache."""
    from opdpipe.generation import decode

    net = _Net.of(model)
    last, kv, valid, next_pos = prefill(net, prompt_ids, pad_id)
    P = valid.shape[1]
    cache = _DecodeCache(kv, valid, max_new_tokens, net.scale)
    rot = net.rope(next_pos[:, None] + torch.arange(max_new_tokens, device=valid.device))  # every decoding position

    def step(tok: torch.Tensor, t: int) -> torch.Tensor:
        cache.at = P + t
        return net.head(net.layers(net.embed(tok[:, None]), rot[:, :, t:t + 1], cache.attend)[:, 0])

    return decode(prompt_ids, net.head(last), step, max_new_tokens, eos_id, pad_id, greedy, generator)
