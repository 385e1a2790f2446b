"""Pure metrics on logits (no model code)."""

from __future__ import annotations

import torch


def token_kl(ref_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(ref ‖ quant) per position, in nats. logits: float [N, V] at the same N positions. Returns float64 [N]
    (computed in float64: small KLs are differences of nearly equal log-probabilities)."""
    ref = ref_logits.double().log_softmax(-1)
    q = q_logits.double().log_softmax(-1)
    return (ref.exp() * (ref - q)).sum(-1).clamp_min(0)


def sqnr_db(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio 10·log10(‖x‖² / ‖x − x̂‖²) in dB (inf when equal)."""
    noise = (reference.double() - approx.double()).pow(2).sum()
    return float("inf") if noise == 0 else float(10 * torch.log10(reference.double().pow(2).sum() / noise))
