"""Bounded-memory conversion: peak RSS of convert (fresh processes) on synthetic models of one width at 2 and 8
decoder layers stays within 10 %, while the model grows by far more than that; the term model of
memory.conversion predicts the peak. The 4-vs-16-layer figures at full scale are in reports/rss-vs-depth.md."""

from __future__ import annotations

import pytest

from pixtral_quant.memory.measure import measure
from pixtral_quant.memory.rss import FLAT, RUNS, predicted_peak, synthetic_config
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
