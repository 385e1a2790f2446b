"""The plan's predicted checkpoint against what convert exports for the bundled tiny model: tensor bytes per
component exactly equal to the sum over the safetensors headers, whole files within 1 % (header included)."""

from __future__ import annotations

import pytest

from pixtral_quant.convert import convert
from pixtral_quant.loading.arch import component_of
from pixtral_quant.loading.files import read_header
from pixtral_quant.loading.names import checkpoint_to_runtime
from pixtral_quant.memory import memory_report
from pixtral_quant.recipes import load_recipe


def exported(out) -> tuple[dict[str, int], int]:
    """(tensor bytes per component from the headers, bytes of the .safetensors files) of a checkpoint dir."""
    per: dict[str, int] = {}
    files = sorted(out.glob("*.safetensors"))
    for f in files:
        for name, info in read_header(f).items():
            comp = component_of(checkpoint_to_runtime(name))
            per[comp] = per.get(comp, 0) + info.nbytes
    return per, sum(f.stat().st_size for f in files)


def check(out, recipe, model) -> dict:
    predicted = memory_report(model, recipe, gpu_memory="80GiB")["checkpoint"]
    per, size = exported(out)
    tensor_bytes = {k: v for k, v in predicted["tensor_bytes"].items() if k != "total"}
    assert tensor_bytes == per
    assert abs(predicted["total_bytes"] - size) <= 0.01 * size
    assert predicted["files"] == len(list(out.glob("*.safetensors")))
    return predicted


@pytest.mark.parametrize("name", ["tiny-rtn-int4", "tiny-rtn-int8", "tiny-bnb-int8", "tiny-bnb-nf4"])
def test_data_free_checkpoints_match_the_prediction(name, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    recipe = load_recipe(name)
    convert(tiny_model_dir, recipe, out)
    predicted = check(out, recipe, tiny_model_dir)
    size = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    assert predicted["total_bytes"] == size  # nf4 too: its quant_state JSON has a fixed width


def test_gptq_checkpoint_matches_the_prediction(gptq_tiny, gptq_recipe, tiny_model_dir):
    out, _ = gptq_tiny
    check(out, gptq_recipe, tiny_model_dir)


def test_sharded_checkpoint_matches_the_prediction(tiny_model_dir, tmp_path):
    from pixtral_quant.config import recipe_from_dict

    raw = load_recipe("tiny-rtn-int4").to_dict() | {"max_shard_gb": 0.01}
    recipe = recipe_from_dict(raw)
    out = tmp_path / "sharded"
    convert(tiny_model_dir, recipe, out)
    assert len(list(out.glob("*.safetensors"))) > 2
    check(out, recipe, tiny_model_dir)


@pytest.mark.parametrize("name", ["tiny-rtn-int4", "tiny-rtn-int8"])
def test_quantized_lm_head_matches_the_prediction(name, tiny_model_dir, tmp_path):
    from pixtral_quant.config import with_overrides

    recipe = with_overrides(load_recipe(name), {"targets.lm_head": "int4" if name.endswith("4") else "int8"})
    out = tmp_path / "out"
    convert(tiny_model_dir, recipe, out)
    predicted = check(out, recipe, tiny_model_dir)
    assert predicted["tensor_bytes"]["lm_head"] < 32768 * 256 * 2 // 1.9  # well under bf16
