"""`pixtral-quant plan` on the shipped configs: the memory promises, the cheapest change, the CLI contract."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from pixtral_quant.cli import main
from pixtral_quant.config import recipe_from_dict, with_overrides
from pixtral_quant.memory import memory_report
from pixtral_quant.memory.units import GIB
from pixtral_quant.recipes import load_recipe



def bf16_head(name: str):
    """The shipped recipe with its lm_head left bf16 (what published checkpoints do)."""
    raw = load_recipe(name).to_dict()
    raw["targets"]["lm_head"] = None
    return recipe_from_dict(raw)


@pytest.fixture(scope="module")
def reports():
    return {"12b-int8": memory_report("pixtral-12b", "pixtral-12b-int8"),
            "large-int4": memory_report("pixtral-large", "pixtral-large-int4"),
            "12b-int4": memory_report("pixtral-12b", "pixtral-12b-int4"),
            "12b-int4-bf16-head": memory_report("pixtral-12b", bf16_head("pixtral-12b-int4"))}


def test_12b_int8_fits_14gb(reports):
    r = reports["12b-int8"]
    assert r["card_bytes"] == 14 * GIB and r["limit_bytes"] == 13.5 * GIB
    assert r["tokens"]["prompt"] == 4160 + 1024 and r["tokens"]["context"] == 4160 + 1024 + 128
    assert r["fits"] and r["peak_bytes"] <= 13.5 * GIB
    assert r["placement"]["embeddings"] == "cpu" and r["weights"]["embeddings"]["where"] == "cpu"


def test_large_int4_fits_80gb_at_8k_context(reports):
    r = reports["large-int4"]
    assert r["tokens"]["context"] == 8192 and r["limit_bytes"] == 75 * GIB
    assert r["fits"] and r["peak_bytes"] <= 75 * GIB
    weights = sum(w["bytes"] for w in r["weights"].values())
    assert 62 * GIB < weights < 64 * GIB  # ≈ 62.8 GiB in the arithmetic
    assert r["kv_cache"]["bytes_per_1k_tokens"] / GIB == pytest.approx(0.34375)


def test_shipped_12b_int4_fits_8gb(reports):
    r = reports["12b-int4"]
    assert r["fits"] and r["peak_bytes"] <= 7.5 * GIB
    assert r["weights"]["lm_head"]["bytes"] < 0.35 * GIB  # 0.32 GiB at INT4 g128 instead of 1.25 in bf16


def test_the_cheapest_change_is_proposed(reports):
    r = reports["12b-int4-bf16-head"]
    assert not r["fits"] and r["peak_phase"] == "prefill"
    assert [c["key"] for c in r["proposal"]["changes"]] == ["lm_head-int4"]
    assert r["proposal"]["targets"]["lm_head"] == "int4" and r["proposal"]["peak_bytes"] <= 7.5 * GIB
    assert [c["key"] for c in r["proposal_supported_today"]["changes"]] == ["lm_head-int4"]  # convert writes it


def test_placement_matters():
    everything_on_gpu = memory_report("pixtral-12b", "pixtral-12b-int8", placement={"embeddings": "gpu",
                                                                                    "vision": "gpu"})
    assert not everything_on_gpu["fits"]
    assert [c["key"] for c in everything_on_gpu["proposal"]["changes"]] == ["embeddings-cpu", "vision-offload"]


def test_native_params_json_plans_like_the_hf_config(reports):
    from pixtral_quant.assets import CONFIGS

    native = memory_report(CONFIGS / "pixtral-12b-native" / "params.json", "pixtral-12b-int8")
    assert native["weights"] == reports["12b-int8"]["weights"]
    assert native["peak_bytes"] == reports["12b-int8"]["peak_bytes"]


def test_quantized_linears_agree_with_converts_plan():
    from pixtral_quant.loading import open_checkpoint
    from pixtral_quant.memory.inventory import inventory, model_shapes
    from pixtral_quant.plan import make_plan

    config = open_checkpoint("tiny").config
    shapes = model_shapes(config)
    for name in ("tiny-gptq-int4", "tiny-bnb-int8"):
        recipe = load_recipe(name)
        if name == "tiny-bnb-int8":
            recipe = with_overrides(recipe, {"targets.lm_head": "int8", "targets.projector": "int8"})
        ours = {it.module for it in inventory(shapes, recipe) if it.fmt is not None and it.fmt.kind != "dense"}
        assert ours == make_plan(config, recipe).names(), name


def test_cli_exit_codes_and_json():
    runner = CliRunner()
    ok = runner.invoke(main, ["plan", "--recipe", "pixtral-12b-int8", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["fits"] is True
    assert runner.invoke(main, ["plan", "--recipe", "pixtral-12b-int4"]).exit_code == 0
    import yaml

    path = Path(tempfile.mkdtemp()) / "int4-bf16-head.yaml"
    path.write_text(yaml.safe_dump(bf16_head("pixtral-12b-int4").to_dict()))
    over = runner.invoke(main, ["plan", "--model", "pixtral-12b", "--recipe", str(path)])
    assert over.exit_code == 1 and "to fit: cheapest change: lm_head INT4" in over.stdout
    small = runner.invoke(main, ["plan", "--recipe", "pixtral-12b-int8", "--gpu-memory", "12GiB", "--json"])
    assert small.exit_code == 1 and json.loads(small.stdout)["card_bytes"] == 12 * GIB
    bad = runner.invoke(main, ["plan", "--recipe", "pixtral-12b-int8", "--gpu-memory", "lots"])
    assert bad.exit_code == 2 and "fix:" in bad.stderr
    short = runner.invoke(main, ["plan", "--recipe", "pixtral-12b-int8", "--context", "1000"])
    assert short.exit_code == 2 and "cannot hold" in short.stderr


def test_workload_options_change_the_plan():
    base = memory_report("pixtral-12b", "pixtral-12b-int8")
    two = memory_report("pixtral-12b", "pixtral-12b-int8", workload={"images": 2})
    assert two["tokens"]["prompt"] - base["tokens"]["prompt"] == 4160
    assert two["kv_cache"]["bytes"] - base["kv_cache"]["bytes"] == 4160 * 163_840
    ctx = memory_report("pixtral-12b", dataclasses.replace(load_recipe("pixtral-12b-int8")),
                        workload={"context": base["max_context"]})
    assert ctx["fits"]
    over = memory_report("pixtral-12b", "pixtral-12b-int8", workload={"context": base["max_context"] + 1})
    assert not over["fits"]


def test_shipped_checkpoints_meet_their_size_thresholds(reports):
    for key in ("12b-int8", "12b-int4", "large-int4"):
        c = reports[key]["checkpoint"]
        assert c["size_ok"] and c["total_bytes"] <= c["max_size_gb"] * 1e9, key


def test_a_card_too_small_is_an_answer_on_stdout_with_the_projects_own_fix():
    """Issue 24 point 7: 'does not fit' is plan's answer (exit 1, stdout, no `error:`), and for INT8 on a 12 GiB card
    the fix names gptq-mixed --fit (INT8 where it fits), whose smallest allocation plan checks to fit that card."""
    res = CliRunner().invoke(main, ["plan", "--recipe", "pixtral-12b-int8", "--gpu-memory", "12GiB"])
    assert res.exit_code == 1 and "error:" not in res.output, res.output
    assert "does not fit: the peak 13.01 GiB (prefill) is over the 11.50 GiB a 12.00 GiB card leaves" in res.stdout
    assert "`convert --scheme gptq-mixed --fit 12GiB`" in " ".join(res.stdout.split())
    assert "from the recipe's promise (pixtral-12b-int8 on a 14GiB card" in " ".join(res.stdout.split())
    # what `convert --scheme gptq-mixed --fit 12GiB` plans with: no promise, so the default placement
    mixed = recipe_from_dict({"name": "gptq-mixed", "scheme": {"name": "gptq-mixed", "fit": "12GiB"}})
    assert memory_report("pixtral-12b", mixed, gpu_memory="12GiB")["fits"]


def test_the_longest_context_stops_at_the_models_own():
    report = memory_report("tiny", "tiny-gptq-int4")
    assert report["model_context"] == 8192 and report["max_context"] == 8192  # was 1048576 (the search ceiling)
    res = CliRunner().invoke(main, ["plan", "--model", "tiny", "--recipe", "tiny-gptq-int4"])
    assert "longest context that fits: 8192 tokens (the model's limit" in " ".join(res.stdout.split())
    res = CliRunner().invoke(main, ["plan", "--model", "tiny", "--recipe", "tiny-gptq-int4", "--context", "9000"])
    assert res.exit_code == 2 and "beyond the model's context of 8192" in res.output
    small = CliRunner().invoke(main, ["plan", "--recipe", "pixtral-12b-int8", "--gpu-memory", "8GiB"])
    assert "no context fits on this card, not even the prompt alone" in " ".join(small.stdout.split())
    assert "longest context that fits: None" not in small.stdout
