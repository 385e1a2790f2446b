"""`pixtral-quant validate` end to end on the bundled trained tiny Pixtral: convert → validate through the CLI
(what the project's CI does), a broken candidate failing with exit 1, KL checked independently, --baseline,
the rendered report, and bad input → exit 2."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from pixtral_quant.cli import main
from pixtral_quant.fixtures.broken import zero_layer

N = "40"  # eval samples per run: the first 40 of the held-out set's seed-0 order


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A module-wide work folder and reference cache (the reference runs once for the whole module)."""
    root = tmp_path_factory.mktemp("validate")
    mp = pytest.MonkeyPatch()
    mp.setenv("PIXTRAL_QUANT_CACHE", str(root / "cache"))
    yield root
    mp.undo()


def cli(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def good(work):
    """convert → validate, as CI does: the gptq-int8 checkpoint and its report."""
    out = work / "g8"
    r = cli("convert", "--recipe", "tiny-gptq-int8", "--out", str(out))
    assert r.exit_code == 0, r.output
    r = cli("validate", "--candidate", str(out), "--num-samples", N, "--report-dir", str(work / "rep-g8"),
            "--layer-sqnr", "2")
    return out, r, json.loads((work / "rep-g8" / "report.json").read_text())


@pytest.fixture(scope="module")
def broken(good, work):
    return zero_layer(good[0], work / "g8-layer1-zeroed", 1)


def test_convert_then_validate_passes_shipped_thresholds(good):
    _, result, report = good
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output
    c = report["candidates"][0]
    assert report["passed"] and c["passed"] and c["bits"] == 8
    assert "tiny-gptq-int8" in c["thresholds"]["source"]  # the recipe's bars, recorded in the manifest
    assert {r["threshold"] for r in c["checks"]} >= {"max_mean_kl", "min_top1_agreement", "min_recovery"}
    assert all(r["passed"] for r in c["checks"])
    assert c["calibration_overlap"].startswith("disjoint from tiny")
    m = c["metrics"]["overall"]
    assert m["samples"] == int(N) and m["accuracy_ref"] >= 0.95 and m["top1_agreement"] == 1.0
    assert len(c["layer_sqnr_db"]) == 4 and min(c["layer_sqnr_db"]) > 40  # INT8: > 40 dB at every layer


def test_broken_candidate_fails_naming_the_metric(broken, work):
    r = cli("validate", "--candidate", str(broken), "--num-samples", N, "--report-dir", str(work / "rep-broken"))
    assert r.exit_code == 1, r.output
    assert "max_mean_kl broken: mean_kl" in r.output and "off by" in r.output
    report = json.loads((work / "rep-broken" / "report.json").read_text())
    assert report["reference"]["cached"]  # the reference ran once for both validations
    assert report["candidates"][0]["metrics"]["overall"]["mean_kl"] > 0.05


def test_kl_and_agreement_match_an_independent_computation(good):
    """Sample 0 of the report, recomputed with torch's kl_div on the logits of the two models."""
    from transformers import LlavaForConditionalGeneration

    from pixtral_quant.calibration.dataset import load_set, open_tokenizer
    from pixtral_quant.calibration.encode import collate
    from pixtral_quant.loading import load_model, open_checkpoint

    out, _, report = good
    row = report["candidates"][0]["samples"][0]
    ckpt = open_checkpoint("tiny")
    tok = open_tokenizer(ckpt.tokenizer)
    eset = load_set(report["eval"]["set"], tok, num_samples=int(N), seed=0)
    assert eset.samples[0].id == row["id"]
    enc = eset.encoded(tok, 0)
    batch = collate([enc])
    start = len(enc.tokens) - 1 - enc.tokens[::-1].index(4)  # last [/INST]
    with torch.no_grad():
        ref = load_model(ckpt)(**batch).logits[0, start:-1]
        cand = LlavaForConditionalGeneration.from_pretrained(out, dtype=torch.float32)(**batch).logits[0, start:-1]
    kl = F.kl_div(cand.double().log_softmax(-1), ref.double().log_softmax(-1), log_target=True, reduction="none")
    assert row["tokens"] == cand.shape[0]
    assert row["kl_mean"] == pytest.approx(float(kl.sum(-1).mean()), rel=1e-3, abs=1e-12)
    assert row["top1_agree"] == int((ref.argmax(-1) == cand.argmax(-1)).sum())


def test_baseline_checks_against_an_independent_baseline(good, work):
    """A baseline whose numbers are not the candidate's (its own report, metrics moved): a drop within the
    tolerance passes, one past it fails, and each record holds the baseline's number and the limit from it."""
    from pixtral_quant.config import Tolerances

    report = json.loads(json.dumps(good[2]))
    now = dict(report["candidates"][0]["metrics"]["overall"])
    moved = {"mean_kl": 0.95 * now["mean_kl"],  # KL 5 % up: within kl_rel (10 %)
             "top1_agreement": now["top1_agreement"] + 0.005,  # down 0.005: within rate_abs (0.01)
             "recovery": now["recovery"] + 0.02}  # down 0.02: past rate_abs, the one regression
    report["candidates"][0]["metrics"]["overall"].update(moved)
    (work / "base-moved.json").write_text(json.dumps(report))
    r = cli("validate", "--candidate", str(good[0]), "--num-samples", N, "--baseline", str(work / "base-moved.json"),
            "--report-dir", str(work / "rep-moved"))
    assert r.exit_code == 1, r.output
    assert "recovery regressed vs baseline" in r.output and r.output.count("regressed vs baseline") == 1
    checks = json.loads((work / "rep-moved" / "report.json").read_text())["candidates"][0]["baseline"]["checks"]
    by_metric = {c["metric"]: c for c in checks}
    assert set(by_metric) >= set(moved)
    tol = Tolerances()
    for metric, base in moved.items():
        c = by_metric[metric]
        limit = base * (1 + tol.kl_rel) + tol.kl_abs if metric == "mean_kl" else base - tol.rate_abs
        assert (c["baseline"], c["value"]) == (base, now[metric]) and c["limit"] == pytest.approx(limit), c
        assert c["passed"] is (metric != "recovery"), c


def test_baseline_with_a_worse_candidate_fails(broken, work, good):
    thresholds = work / "loose.yaml"  # thresholds the broken one meets: only the regression check can fail it
    thresholds.write_text("max_mean_kl: 100\n")
    r = cli("validate", "--candidate", str(broken), "--num-samples", N, "--thresholds", str(thresholds),
            "--baseline", str(work / "rep-g8" / "report.json"))
    assert r.exit_code == 1, r.output
    assert "mean_kl regressed vs baseline" in r.output


def test_report_renders(good, work):
    folder = work / "rep-g8"
    md = (folder / "report.md").read_text()
    report = json.loads((folder / "report.json").read_text())
    assert report["schema"] == 1 and set(report["figures"]) >= {"kl_distribution.png", "accuracy_by_task.png",
                                                                 "layer_sqnr.png"}
    for name in report["figures"]:
        png = (folder / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000, name
        assert f"]({name})" in md
    assert "| g8 | 8 |" in md and "| chart |" in md


def test_two_candidates_draw_the_tradeoff(good, broken, work):
    r = cli("validate", "--candidate", str(good[0]), "--candidate", str(broken), "--num-samples", "8",
            "--report-dir", str(work / "rep-two"))
    assert r.exit_code == 1, r.output
    assert (work / "rep-two" / "tradeoff.png").stat().st_size > 5000
    assert "g8-layer1-zeroed" in (work / "rep-two" / "report.md").read_text()


def test_report_scripts_score_as_validate_does(good, broken, work):
    """diagnostics/scoring.py (what scripts/report_convert.py and report_mixed.py print) gives validate's own
    numbers: the CLI's report on the same 8 samples, field for field."""
    from pixtral_quant.assets import TINY_MODEL
    from pixtral_quant.diagnostics.scoring import MAX_NEW_TOKENS, scored

    ref, rows = scored(TINY_MODEL, {"good": good[0], "broken": broken}, num_samples=8)
    r = cli("validate", "--candidate", str(good[0]), "--candidate", str(broken), "--num-samples", "8",
            "--max-new-tokens", str(MAX_NEW_TOKENS), "--report-dir", str(work / "rep-scored"))
    report = json.loads((work / "rep-scored" / "report.json").read_text())
    assert r.exit_code == 1 and ref["samples"] == report["eval"]["samples"] == 8
    for name, entry in zip(("good", "broken"), report["candidates"]):
        overall = entry["metrics"]["overall"]
        assert rows[name]["kl"] == overall["mean_kl"] and rows[name]["accuracy"] == overall["accuracy_cand"]
        assert rows[name]["by_task"] == {**{t: g["accuracy_cand"] for t, g in entry["metrics"]["by_task"].items()},
                                         "overall": overall["accuracy_cand"]}
        assert ref["accuracy"]["overall"] == overall["accuracy_ref"]
    assert rows["broken"]["kl"] > 100 * rows["good"]["kl"]


# --- bad input: one clear error, exit 2, before any model runs ------------------------------------------------

def _copy_with_config(src, dst, edit):
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    edit(cfg)
    (dst / "config.json").write_text(json.dumps(cfg))
    (dst / "manifest.json").unlink()  # a checkpoint from elsewhere (its manifest would flag the edit first)
    return dst


@pytest.mark.parametrize("field, edit", [
    ("text_config.vocab_size", lambda c: c["text_config"].update(vocab_size=32000)),
    ("text_config.num_hidden_layers", lambda c: c["text_config"].update(num_hidden_layers=3)),
])
def test_different_architecture_or_vocabulary(good, tmp_path, field, edit):
    other = _copy_with_config(good[0], tmp_path / "other", edit)
    r = cli("validate", "--candidate", str(other))
    assert r.exit_code == 2 and field in r.output and "error:" in r.output


def test_eval_set_overlapping_calibration(good):
    from pixtral_quant.calibration.builtin import builtin_manifest

    r = cli("validate", "--candidate", str(good[0]), "--eval", str(builtin_manifest("tiny")))
    assert r.exit_code == 2 and "also in the calibration set of g8" in r.output


def test_missing_thresholds_file(good, tmp_path):
    r = cli("validate", "--candidate", str(good[0]), "--thresholds", str(tmp_path / "nope.yaml"))
    assert r.exit_code == 2 and "no such thresholds file" in r.output


def test_half_written_candidate(good, tmp_path):
    partial = tmp_path / "out.partial"
    shutil.copytree(good[0], partial)
    r = cli("validate", "--candidate", str(partial))
    assert r.exit_code == 2 and "half-written" in r.output
    r = cli("validate", "--candidate", str(tmp_path / "out"))  # only out.partial exists: a conversion died
    assert r.exit_code == 2 and "half-written" in r.output
    truncated = shutil.copytree(good[0], tmp_path / "truncated")
    with (truncated / "model.safetensors").open("r+b") as fh:
        fh.truncate(1000)
    r = cli("validate", "--candidate", str(truncated))
    assert r.exit_code == 2 and "model.safetensors is 1000 bytes" in r.output


def test_usage_errors(good, tmp_path):
    r = cli("validate", "--candidate", str(good[0]), "--thresholds", "x.yaml", "--recipe", "tiny-gptq-int8")
    assert r.exit_code == 2 and "both given" in r.output
    foreign = tmp_path / "reports"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("not a report")
    r = cli("validate", "--candidate", str(good[0]), "--report-dir", str(foreign))
    assert r.exit_code == 2 and (foreign / "keep.txt").is_file()


def test_a_mistral_native_reference(good, tmp_path):
    """The reference may be in Mistral-native format (params.json + consolidated.safetensors): same weights,
    so the candidate's metrics equal those measured against the HF copy."""
    from pixtral_quant.assets import TINY_EVAL
    from pixtral_quant.loading import open_checkpoint, write_native

    native = tmp_path / "native"
    write_native(open_checkpoint("tiny"), native)
    report_dir = tmp_path / "rep"
    r = cli("validate", "--reference", str(native), "--candidate", str(good[0]), "--eval",
            str(TINY_EVAL / "manifest.jsonl"), "--num-samples", N, "--report-dir", str(report_dir))
    assert r.exit_code == 0, r.output
    report = json.loads((report_dir / "report.json").read_text())
    assert report["reference"]["format"] == "native"
    ours = report["candidates"][0]["metrics"]["overall"]
    hf = good[2]["candidates"][0]["metrics"]["overall"]
    assert ours["top1_agreement"] == hf["top1_agreement"] and ours["accuracy_ref"] == hf["accuracy_ref"]
    assert ours["mean_kl"] == pytest.approx(hf["mean_kl"], rel=0.05, abs=1e-9)
