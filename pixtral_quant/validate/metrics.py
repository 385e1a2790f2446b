"""Pure metrics on logits and hidden states (tensors in, numbers out; no model code)."""

from __future__ import annotations

import math

import torch


def token_kl(ref_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(ref ‖ quant) per position, in nats. logits: float [N, V] at the same N positions. Returns float64 [N]
    (computed in float64: small KLs are differences of nearly equal log-probabilities)."""
    ref = ref_logits.double().log_softmax(-1)
    q = q_logits.double().log_softmax(-1)
    return (ref.exp() * (ref - q)).sum(-1).clamp_min(0)


def top1_agree(ref_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """bool [N]: the two argmaxes agree at each position. logits: float [N, V]."""
    return ref_logits.argmax(-1) == q_logits.argmax(-1)


def target_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """float64 [N]: −log p(target) at each position. logits: float [N, V]; targets: int64 [N]."""
    logp = logits.double().log_softmax(-1)
    return -logp.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)


def ppl_ratio(nll_ref: float, nll_quant: float, tokens: int) -> float:
    """Perplexity(quant) / perplexity(ref) over `tokens` positions, from summed NLLs (nats)."""
    return math.exp((nll_quant - nll_ref) / tokens) if tokens else 1.0


def sqnr_db(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio 10·log10(‖x‖² / ‖x − x̂‖²) in dB (inf when equal)."""
    noise = (reference.double() - approx.double()).pow(2).sum()
    return float("inf") if noise == 0 else float(10 * torch.log10(reference.double().pow(2).sum() / noise))


def summarize(values: list[float]) -> dict[str, float]:
    """{'mean', 'p95', 'max'} of a list of floats (p95: linear interpolation, numpy's default); NaNs when empty."""
    if not values:
        return {"mean": float("nan"), "p95": float("nan"), "max": float("nan")}
    t = torch.tensor(values, dtype=torch.float64)
    return {"mean": float(t.mean()), "p95": float(torch.quantile(t, 0.95)), "max": float(t.max())}
