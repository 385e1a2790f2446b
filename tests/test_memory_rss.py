"""Bounded-memory conversion: peak RSS of convert (fresh processes) on synthetic models of one width at 2 and 8
decoder layers stays within 10 %, while the model grows by far more than that; the term model of
diagnostics.conversion predicts the peak. The 4-vs-16-layer figures at full scale are in reports/rss-vs-depth.md."""

from __future__ import annotations

import pytest

from pixtral_quant.diagnostics.measure import measure
from pixtral_quant.diagnostics.rss import FLAT, RUNS, predicted_peak, synthetic_config
from pixtral_quant.synth import synthesize


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    work = tmp_path_factory.mktemp("rss")
    config = synthetic_config(work / "cfg", 1024)
    recipe = RUNS["rtn-small"].recipe()
    out = {}
    for layers in (2, 8):
        model = synthesize(config, work / f"m{layers}", layers=layers).out
        # One thread: each extra torch thread gets its own malloc arena, whose freed pages make the peak noisy.
        m = measure({"kind": "convert", "model": str(model), "recipe": recipe, "out": str(work / f"o{layers}")},
                    threads=1)
        out[layers] = (m, sum(f.stat().st_size for f in model.glob("*.safetensors")), model)
    return out, recipe


def test_peak_rss_is_flat_with_depth(measured):
    runs, _ = measured
    (shallow, small, _), (deep, big, _) = runs[2], runs[8]
    assert big - small > 0.1 * shallow["peak_rss"], (shallow, deep)  # growth would break the 10 % bound
    assert abs(deep["peak_rss"] / shallow["peak_rss"] - 1) <= FLAT


def test_the_term_model_predicts_the_peak(measured):
    runs, recipe = measured
    for m, _, model in runs.values():
        predicted = predicted_peak(model, recipe, m["baseline_rss"])
        assert abs(predicted / m["peak_rss"] - 1) <= 0.2, (predicted, m["peak_rss"])


def test_measure_sees_an_allocation():
    small = measure({"kind": "alloc", "bytes": 50 * 2**20})
    big = measure({"kind": "alloc", "bytes": 400 * 2**20})
    grown = (big["peak_rss"] - big["baseline_rss"]) - (small["peak_rss"] - small["baseline_rss"])
    assert 0.7 * 350 * 2**20 < grown < 1.2 * 350 * 2**20, grown / 2**20


def test_a_quantized_lm_head_counts_in_the_outside_phase():
    """The full-size run measured 19.8 GiB against 4.0 predicted for Pixtral-12B rtn-int4 with an INT4 lm_head: the
    lm_head (131072 × 5120) was quantized all at once while the outside tensors were held. Now RTN works on
    ROW_BLOCK rows at a time and the model counts that block's temporaries in the outside phase."""
    from dataclasses import replace

    from pixtral_quant.config import with_overrides
    from pixtral_quant.diagnostics.conversion import convert_rss
    from pixtral_quant.memory.inventory import model_shapes
    from pixtral_quant.memory.report import open_model
    from pixtral_quant.recipes import load_recipe

    config = open_model("pixtral-12b").config
    shapes = model_shapes(config)
    base = with_overrides(load_recipe("pixtral-12b-int4"), {"scheme": "rtn-int4"})
    head = with_overrides(base, {"targets.lm_head": "int4"})
    no_head = replace(base, targets=replace(base.targets, lm_head=None))
    # RTN's temporaries, 24 bytes per parameter, on one block of 8192 rows of the 5120-wide head: 0.94 GiB.
    transient = 24 * 8192 * 5120
    assert convert_rss(config, shapes, head).outside_transient == transient == 1_006_632_960
    assert convert_rss(config, shapes, no_head).outside_transient == 0
    # With the head's transient the outside phase is the peak: the 0.76 GiB import baseline + every non-decoder
    # tensor in bf16 (embeddings and lm_head, 131072 × 5120 each; the vision tower's 24 layers 1024 wide with MLP
    # 4096 and 2 norms, its 16×16×3 patch conv and ln_pre; the projector's 1024 → 5120 → 5120 weights, whose
    # biases the model leaves out; the final norm) + the transient: 5.01 GiB (4.07 without the transient).
    vision = 24 * (4 * 1024 * 1024 + 3 * 1024 * 4096 + 2 * 1024) + 1024 * 3 * 16 * 16 + 1024
    outside = 2 * (2 * 131072 * 5120 + vision + 1024 * 5120 + 5120 * 5120 + 5120)  # 3.31 GiB
    peak = convert_rss(config, shapes, head).peak
    assert peak == int(0.76 * 2**30) + outside + transient == 5_376_935_690
    # The full-size run of this conversion measured a peak RSS of 5.41 GiB (reports/full-size-cpu.md, int4):
    # measured / predicted is 1.080 here (1.091 with that job's own baseline); without the transient it was 1.33.
    assert abs(5.41 * 2**30 / peak - 1) <= 0.10, peak / 2**30
