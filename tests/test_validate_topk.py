"""The top-k metrics of the vLLM engine (metrics.topk_kl, topk_top1_agree, topk_of) on hand-made and random
distributions: exact when k covers the vocabulary, a lower bound of the full KL otherwise, tight when the tail is
light, order- and padding-invariant, and sensitive to mass moved off the top-k (what renormalizing would miss)."""

from __future__ import annotations

import math

import pytest
import torch

from pixtral_quant.validate import metrics


def pair(n=64, v=200, scale=4.0, noise=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    ref = torch.randn(n, v, generator=g, dtype=torch.float64) * scale
    return ref, ref + noise * torch.randn(n, v, generator=g, dtype=torch.float64)


def topk_kl_of(ref, cand, k):
    return metrics.topk_kl(*metrics.topk_of(ref, k), *metrics.topk_of(cand, k))


def test_whole_vocabulary_is_exact():
    ref, cand = pair(v=50)
    assert torch.allclose(topk_kl_of(ref, cand, 50), metrics.token_kl(ref, cand), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("k", [1, 2, 5, 20, 100])
def test_lower_bound_of_the_full_kl(k):
    ref, cand = pair(noise=1.5)
    exact, approx = metrics.token_kl(ref, cand), topk_kl_of(ref, cand, k)
    assert (approx <= exact + 1e-6).all()
    assert approx.mean() > 0  # not trivially zero


def test_tight_when_the_tail_is_light():
    """Peaked distributions (a trained LM's answer positions): k = 20 misses < 1 % of the KL."""
    ref, cand = pair(scale=8.0, noise=0.3)
    exact, approx = metrics.token_kl(ref, cand), topk_kl_of(ref, cand, 20)
    assert float((exact - approx).abs().sum() / exact.sum()) < 0.01
    wide = topk_kl_of(*pair(scale=1.0, noise=0.3), 20)  # flat distributions: most KL lies in the tail
    exact_wide = metrics.token_kl(*pair(scale=1.0, noise=0.3))
    assert float(wide.sum() / exact_wide.sum()) < 0.5


def test_equals_the_coarse_grained_kl_written_out():
    """Shared support {0, 1}; token 2 is only in ref's top-k, token 3 only in cand's: both go to the tail."""
    p = torch.tensor([0.5, 0.2, 0.2, 0.05, 0.05], dtype=torch.float64)
    q = torch.tensor([0.3, 0.3, 0.05, 0.3, 0.05], dtype=torch.float64)
    ref_ids, cand_ids = torch.tensor([[0, 1, 2]]), torch.tensor([[0, 3, 1]])
    got = metrics.topk_kl(ref_ids, p.log()[ref_ids], cand_ids, q.log()[cand_ids])
    pr, qr = 1 - 0.5 - 0.2, 1 - 0.3 - 0.3
    expected = 0.5 * math.log(0.5 / 0.3) + 0.2 * math.log(0.2 / 0.3) + pr * math.log(pr / qr)
    assert float(got) == pytest.approx(expected, rel=1e-12)


def test_mass_moved_off_the_top_k_counts():
    """The candidate keeps the reference's top-k ratios but moves half the mass to tokens outside them:
    renormalized top-k KL would be 0; the lumped tail sees it."""
    p = torch.tensor([0.6, 0.3, 0.05, 0.05], dtype=torch.float64)
    q = torch.tensor([0.3, 0.15, 0.3, 0.25], dtype=torch.float64)
    ids = torch.tensor([[0, 1]])
    got = float(metrics.topk_kl(ids, p.log()[ids], ids, q.log()[ids]))
    expected = 0.6 * math.log(2) + 0.3 * math.log(2) + 0.1 * math.log(0.1 / 0.55)
    assert got == pytest.approx(expected, rel=1e-12) and got > 0.4


def test_order_padding_and_rounding():
    ref, cand = pair(n=8)
    r_ids, r_lp = metrics.topk_of(ref, 20)
    c_ids, c_lp = metrics.topk_of(cand, 20)
    base = metrics.topk_kl(r_ids, r_lp, c_ids, c_lp)
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(1))
    shuffled = metrics.topk_kl(r_ids[:, perm], r_lp[:, perm], c_ids[:, perm], c_lp[:, perm])
    assert torch.allclose(shuffled, base, rtol=1e-12, atol=1e-15)
    pad_ids, pad_lp = torch.full((8, 3), -1), torch.full((8, 3), -math.inf)
    padded = metrics.topk_kl(torch.cat([r_ids, pad_ids], 1), torch.cat([r_lp, pad_lp], 1),
                             torch.cat([pad_ids, c_ids], 1), torch.cat([pad_lp, c_lp], 1))
    assert torch.allclose(padded, base, rtol=1e-12, atol=1e-15)
    # Identical lists whose float32 probabilities sum to slightly more than 1: finite and ~0, not inf/NaN.
    lp = torch.tensor([[math.log(0.7) + 1e-7, math.log(0.3) + 1e-7]])
    same = metrics.topk_kl(torch.tensor([[4, 9]]), lp, torch.tensor([[9, 4]]), lp.flip(-1))
    assert torch.isfinite(same).all() and float(same) < 1e-9


def test_top1_agreement_matches_the_full_logits():
    ref, cand = pair(noise=2.0)
    full = metrics.top1_agree(ref, cand)
    assert 0 < int(full.sum()) < len(full)  # both outcomes occur
    for k in (1, 5):
        r_ids, r_lp = metrics.topk_of(ref, k)
        c_ids, c_lp = metrics.topk_of(cand, k)
        assert metrics.topk_top1_agree(r_ids, r_lp, c_ids, c_lp).tolist() == full.tolist()
        flipped = metrics.topk_top1_agree(r_ids.flip(-1), r_lp.flip(-1), c_ids, c_lp)  # any order
        assert flipped.tolist() == full.tolist()


def test_topk_of_is_sorted_log_probabilities():
    ref, _ = pair(n=3, v=10)
    ids, lp = metrics.topk_of(ref, 4)
    assert ids.shape == lp.shape == (3, 4) and lp.dtype == torch.float32
    assert (lp[:, :-1] >= lp[:, 1:]).all()
    assert torch.allclose(lp.double(), ref.log_softmax(-1).gather(-1, ids), atol=1e-6)
    assert metrics.topk_of(ref, 99)[0].shape == (3, 10)  # k past the vocabulary: all of it
