"""Pure metrics on logits and hidden states (tensors in, numbers out; no model code).

Two views of a model's next-token distribution at the answer positions:
- full logits [N, V] (the transformers engine): token_kl, top1_agree, target_nll are exact;
- top-k log-probabilities (the vLLM engine: prompt logprobs, k per position, plus the answer token's own):
  topk_kl, topk_top1_agree are computed from them (target_nll needs no approximation: vLLM always returns the
  log-probability of the prompt token itself).

Why topk_kl lumps the tail into one bucket rather than renormalizing the top-k: the buckets are the tokens in
BOTH models' top-k lists plus one bucket holding everything else (mass 1 − Σ shared, for each model). That is
the exact KL of a coarse-graining of the two full distributions, so by the log-sum inequality it never exceeds
the true KL (a lower bound) and equals it up to the KL inside the tail bucket, which is small when the tail
mass is; nothing is imputed. Renormalizing the top-k instead discards the difference in the mass the two models
put outside it — the very signal of a broken layer, which moves mass off the reference's choices — and is not a
bound in either direction. The bucket uses the shared support (not the reference's top-k alone) because a
reference top-k token missing from the candidate's top-k has an unknown probability (only ≤ the candidate's
k-th); filling it in would be a guess.
"""

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


# A tail bucket's mass is 1 − (a sum of float32 probabilities): below this it is rounding noise, and the
# candidate's bucket is floored here so that KL stays finite when its shared tokens sum to ≥ 1 by rounding.
TAIL_FLOOR = 1e-6


def topk_of(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-k view of full logits, as vLLM's logprobs give it: (ids int64 [N, k], logprobs float32 [N, k]),
    sorted by descending log-probability. logits: float [N, V]."""
    logp = logits.double().log_softmax(-1)
    values, ids = logp.topk(min(k, logp.shape[-1]), dim=-1)
    return ids, values.float()


def topk_kl(ref_ids: torch.Tensor, ref_logprobs: torch.Tensor, cand_ids: torch.Tensor,
            cand_logprobs: torch.Tensor) -> torch.Tensor:
    """KL(ref ‖ cand) per position in nats from each model's top-k log-probabilities, on the shared support
    with the rest lumped into one bucket (see the module docstring: a lower bound of the full KL).

    ref_ids, cand_ids: int64 [N, K] (and [N, K'] for cand; any order; id −1 marks padding);
    ref_logprobs, cand_logprobs: float [N, K] / [N, K'] their log-probabilities. Returns float64 [N] ≥ 0."""
    ref_lp, cand_lp = ref_logprobs.double(), cand_logprobs.double()
    match = (ref_ids.unsqueeze(-1) == cand_ids.unsqueeze(-2)) & (ref_ids.unsqueeze(-1) >= 0)  # [N, K, K']
    shared = match.any(-1)  # [N, K]: this reference top-k token is in the candidate's list too
    cand_at = torch.where(match, cand_lp.unsqueeze(-2), -math.inf).amax(-1)  # [N, K]: its candidate logprob
    p = torch.where(shared, ref_lp.exp(), 0.0)
    q = torch.where(shared, cand_at.exp(), 0.0)
    head = (p * torch.where(shared, ref_lp - cand_at, 0.0)).sum(-1)
    p_rest = (1 - p.sum(-1)).clamp_min(0)
    q_rest = (1 - q.sum(-1)).clamp_min(TAIL_FLOOR)
    tail = torch.special.xlogy(p_rest, p_rest) - torch.special.xlogy(p_rest, q_rest)
    return (head + tail).clamp_min(0)


def topk_top1_agree(ref_ids: torch.Tensor, ref_logprobs: torch.Tensor, cand_ids: torch.Tensor,
                    cand_logprobs: torch.Tensor) -> torch.Tensor:
    """bool [N]: the two models' most likely tokens agree. Shapes as topk_kl (exact: the argmax is in any top-k)."""
    def best(ids, lp):
        return ids.gather(-1, lp.argmax(-1, keepdim=True)).squeeze(-1)

    return best(ref_ids, ref_logprobs) == best(cand_ids, cand_logprobs)
