"""The bias meter: does an advantage design follow the true gradient of sum_n D_f(q || p_theta)?

At every visited prefix of the current batch we know the full next-token distributions of the
student p and the teacher q. Three gradients are compared on the student's parameters:

- exact:    grad of agg_n D_f(q_n || p_n)                                  (the target)
- expected: grad of -agg_n sum_a p_n(a) A(u_a) log p_n(a), p and A detached (the design's
            gradient averaged over the token drawn at each prefix: bias without sampling noise)
- sampled:  grad of -agg_n A(u_{y_n}) log p_n(y_n)                          (what training uses)

OPD+ gives cos(expected, exact) = 1 up to float error; stop-gradient OPD does not, except for
reverse KL. The sampled gradient adds Monte Carlo noise on top.
"""
from __future__ import annotations

import torch

from opdpipe.advantages import get_design
from opdpipe.divergences import get_divergence
from opdpipe.losses import aggregate
from opdpipe.scoring import response_logits


def _flat_grad(loss: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


def _compare(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    cos = torch.nn.functional.cosine_similarity(a, b, dim=0).item()
    return cos, ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def measure(student, teacher, divergence: str, design: str, student_ctx, teacher_ctx, response, mask,
            pad_id: int, log_u_clip: float, agg: str = "token_mean") -> dict[str, float]:
    div, des = get_divergence(divergence), get_design(design)
    params = [p for p in student.parameters() if p.requires_grad]
    lp_full = torch.log_softmax(response_logits(student, student_ctx, response, mask, pad_id), -1)  # [B, T, V]
    with torch.no_grad():
        lq_full = torch.log_softmax(response_logits(teacher, teacher_ctx, response, mask, pad_id), -1)
    m = mask.bool()
    g_exact = _flat_grad(aggregate(div.exact(lq_full, lp_full), m, agg), params)
    log_u_full = (lq_full - lp_full.detach()).clamp(-log_u_clip, log_u_clip)
    adv_full = des.immediate(div, log_u_full)  # [B, T, V], a constant
    expected = -(lp_full.detach().exp() * adv_full * lp_full).sum(-1)
    g_expected = _flat_grad(aggregate(expected, m, agg), params)
    lp_tok = lp_full.gather(-1, response.unsqueeze(-1)).squeeze(-1)
    adv_tok = adv_full.gather(-1, response.unsqueeze(-1)).squeeze(-1)
    g_sampled = _flat_grad(aggregate(-adv_tok * lp_tok, m, agg), params)
    cos_e, rel_e = _compare(g_expected, g_exact)
    cos_s, rel_s = _compare(g_sampled, g_exact)
    return {"bias/cos_expected": cos_e, "bias/relerr_expected": rel_e, "bias/cos_sampled": cos_s,
            "bias/relerr_sampled": rel_s, "bias/exact_grad_norm": g_exact.norm().item()}
