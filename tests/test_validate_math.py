"""validate's pure parts on tiny tensors and hand-made rows: metrics, aggregation, thresholds, baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pixtral_quant.config import DEFAULT_THRESHOLDS, Thresholds, Tolerances
from pixtral_quant.errors import InputError, UsageError
from pixtral_quant.validate import checks, compare, metrics


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(7, 50, generator=g) * 3
    return ref, ref + 0.3 * torch.randn(7, 50, generator=g)


def test_token_kl_equals_torch_kl_div(logits):
    ref, q = logits
    expected = F.kl_div(q.log_softmax(-1), ref.log_softmax(-1), log_target=True, reduction="none").sum(-1)
    assert torch.allclose(metrics.token_kl(ref, q).float(), expected, rtol=1e-5, atol=1e-7)
    assert metrics.token_kl(ref, ref).abs().max() < 1e-12


def test_top1_nll_and_ppl_ratio(logits):
    ref, q = logits
    assert metrics.top1_agree(ref, q).tolist() == (ref.argmax(-1) == q.argmax(-1)).tolist()
    targets = torch.tensor([1, 2, 3, 4, 5, 6, 7])
    nll = metrics.target_nll(q, targets)
    assert torch.allclose(nll.float(), F.cross_entropy(q, targets, reduction="none"), rtol=1e-5)
    assert metrics.ppl_ratio(10.0, 10.0 + 7 * math.log(2), 7) == pytest.approx(2.0)
    assert metrics.ppl_ratio(1.0, 1.0, 0) == 1.0


def test_summarize_and_sqnr():
    values = [0.1, 0.5, 0.2, 3.0, 0.0]
    s = metrics.summarize(values)
    assert s["mean"] == pytest.approx(np.mean(values)) and s["max"] == 3.0
    assert s["p95"] == pytest.approx(np.percentile(values, 95))
    x = torch.ones(100)
    assert metrics.sqnr_db(x, x + 0.1) == pytest.approx(20.0)  # ‖x‖²/‖noise‖² = 100
    assert metrics.sqnr_db(x, x) == float("inf")


def row(kl, agree, tokens=2, correct=(True, True), same=True, task="t", bucket="≤64 px"):
    return {"id": "x", "task": task, "bucket": bucket, "tokens": tokens, "kl_mean": kl, "kl_max": kl,
            "top1_agree": agree, "nll_ref": 1.0, "nll_cand": 1.0 + kl, "same_output": same,
            "ref_correct": correct[0], "cand_correct": correct[1]}


def test_aggregate_and_groups():
    rows = [row(0.0, 2), row(0.2, 1, correct=(True, False), same=False, task="u"), row(0.1, 2, bucket="no image")]
    m = compare.aggregate(rows)
    assert m["samples"] == 3 and m["tokens"] == 6
    assert m["mean_kl"] == pytest.approx(0.1) and m["max_kl"] == pytest.approx(0.2)
    assert m["top1_agreement"] == pytest.approx(5 / 6) and m["exact_match"] == pytest.approx(2 / 3)
    assert m["accuracy_ref"] == 1.0 and m["accuracy_cand"] == pytest.approx(2 / 3)
    assert m["recovery"] == pytest.approx(2 / 3)
    assert m["ppl_ratio"] == pytest.approx(math.exp(0.3 / 6))
    assert list(compare.grouped(rows, "bucket")) == ["no image", "≤64 px"]  # small to large, not alphabetical
    assert compare.grouped(rows, "task")["u"]["recovery"] == 0.0
    unlabeled = compare.aggregate([row(0.0, 2, correct=(None, None))])
    assert unlabeled["accuracy_ref"] is None and unlabeled["recovery"] is None


def test_size_bucket_and_normalize():
    assert compare.size_bucket([]) == "no image"
    assert compare.size_bucket([(64, 32)]) == "≤64 px"
    assert compare.size_bucket([(32, 32), (3, 100, 200)]) == "129–256 px"
    assert compare.size_bucket([(4000, 10)]) == "513–1024 px"
    assert compare.normalize("  Red. ") == compare.normalize("red")
    assert compare.normalize("dark  red") == "dark red" != compare.normalize("red")


def test_thresholds_pass_fail_and_margin():
    t = Thresholds(max_mean_kl=0.01, min_recovery=0.97, min_exact_match=0.9)
    records = {r["threshold"]: r for r in checks.check_thresholds({"mean_kl": 0.05, "recovery": 0.99}, t)}
    assert set(records) == {"max_mean_kl", "min_recovery", "min_exact_match"}
    assert records["max_mean_kl"]["passed"] is False and records["max_mean_kl"]["margin"] == pytest.approx(0.04)
    assert records["min_recovery"]["passed"] is True
    assert records["min_exact_match"]["passed"] is None  # not measured: reported as n/a, not as a pass


def test_threshold_sources():
    explicit = (Thresholds(max_mean_kl=1.0), "--thresholds f.yaml")
    manifest = {"recipe": {"name": "tiny-gptq-int8", "thresholds": {"max_mean_kl": 0.5}}}
    assert checks.pick_thresholds(explicit, manifest, 8) == explicit
    t, source = checks.pick_thresholds(None, manifest, 8)
    assert t.max_mean_kl == 0.5 and "tiny-gptq-int8" in source
    t, source = checks.pick_thresholds(None, {"recipe": {"thresholds": {}}}, 8)
    assert t == DEFAULT_THRESHOLDS[8] and "8-bit" in source
    t, source = checks.pick_thresholds(None, None, 2)  # fewer bits than any entry: the INT4 bars
    assert t == DEFAULT_THRESHOLDS[4] and "2-bit" in source


def test_thresholds_file(tmp_path):
    good = tmp_path / "t.yaml"
    good.write_text("thresholds: {max_mean_kl: 0.02, min_top1_agreement: 0.9}\n")
    assert checks.read_thresholds_file(good) == Thresholds(max_mean_kl=0.02, min_top1_agreement=0.9)
    (tmp_path / "bad.yaml").write_text("max_mean_kl: 0.02\nmin_acuracy: 1\n")
    with pytest.raises(UsageError, match="min_acuracy"):
        checks.read_thresholds_file(tmp_path / "bad.yaml")
    with pytest.raises(InputError, match="no such thresholds file"):
        checks.read_thresholds_file(tmp_path / "missing.yaml")


def test_baseline_tolerances():
    base = {"mean_kl": 0.01, "top1_agreement": 0.99, "recovery": 1.0, "ppl_ratio": 1.01, "exact_match": None}
    same = checks.check_baseline(base, base, Tolerances())
    assert same and all(r["passed"] for r in same) and {r["metric"] for r in same} == {
        "mean_kl", "top1_agreement", "recovery", "ppl_ratio"}
    worse = {**base, "mean_kl": 0.0112, "recovery": 0.95}
    failed = {r["metric"] for r in checks.check_baseline(worse, base, Tolerances()) if not r["passed"]}
    assert failed == {"mean_kl", "recovery"}
    slightly = {**base, "mean_kl": 0.0105, "recovery": 0.995}  # inside kl_rel = 10 %, rate_abs = 0.01
    assert all(r["passed"] for r in checks.check_baseline(slightly, base, Tolerances()))


def test_reference_cache_round_trip(tmp_path):
    from pixtral_quant.validate import cache
    from pixtral_quant.validate.outputs import ModelOutputs, SampleOutput

    out = ModelOutputs([SampleOutput(torch.randn(2, 9), torch.tensor([3, 2]), [5, 6], torch.randn(4, 7, 3)),
                        SampleOutput(torch.randn(3, 9), torch.tensor([1, 1, 2]), [], None)])
    key = cache.reference_key("m", "sha256:e", {"max_new_tokens": 8})
    assert key != cache.reference_key("m", "sha256:other", {"max_new_tokens": 8})
    assert cache.load(tmp_path, key, 0) is None
    cache.store(tmp_path, key, out)
    back = cache.load(tmp_path, key, 1)
    assert torch.equal(back.samples[0].answer_logits, out.samples[0].answer_logits)
    assert torch.equal(back.samples[0].hidden, out.samples[0].hidden) and back.samples[1].hidden is None
    assert back.samples[0].generated == [5, 6] and torch.equal(back.samples[1].answer_ids, out.samples[1].answer_ids)
    assert cache.load(tmp_path, key, 0).samples[0].hidden is None
    assert cache.load(tmp_path, key, 2) is None  # more per-layer samples asked than stored: run again
    assert not list((tmp_path / "reference").glob("*.partial"))
