"""GPTQ-format checkpoints with a quantized lm_head (targets.lm_head: int4 / int8 at the scheme's bits): the
config that makes plain transformers (optimum + GPTQModel kernels) build the lm_head as a quantized Linear while
the vision tower and projector stay bf16, and the generation that follows."""

from __future__ import annotations

import json

import pytest
import torch

from pixtral_quant.config import with_overrides
from pixtral_quant.convert import convert
from pixtral_quant.errors import UsageError
from pixtral_quant.recipes import load_recipe


@pytest.fixture(scope="module")
def rtn_head(tiny_model_dir, tmp_path_factory):
    recipe = with_overrides(load_recipe("tiny-rtn-int4"), {"targets.lm_head": "int4"})
    out = tmp_path_factory.mktemp("lmhead") / "out"
    return out, convert(tiny_model_dir, recipe, out)


def test_config_and_tensors(rtn_head):
    out, result = rtn_head
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["lm_head"] is True and qc["block_name_to_quantize"] == ""
    assert qc["modules_in_block_to_quantize"][0][-1] == "lm_head"
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "language_model.lm_head.qweight" in keys and "language_model.lm_head.weight" not in keys
    assert "lm_head" in {e.name for e in result.plan.quantized()}


def test_reloads_with_the_lm_head_quantized_and_vision_in_bf16(rtn_head, tiny_model_dir):
    from transformers import LlavaForConditionalGeneration

    from pixtral_quant.loading import load_model, open_checkpoint

    out, _ = rtn_head
    model = LlavaForConditionalGeneration.from_pretrained(out, dtype=torch.float32, device_map="cpu")
    assert type(model.lm_head) is not torch.nn.Linear
    assert type(model.model.language_model.layers[0].mlp.down_proj) is not torch.nn.Linear
    vision = [m for m in model.model.vision_tower.modules() if isinstance(m, torch.nn.Linear)]
    projector = [m for m in model.model.multi_modal_projector.modules() if isinstance(m, torch.nn.Linear)]
    assert vision and projector and all(type(m) is torch.nn.Linear for m in vision + projector)
    ids = torch.tensor([[1, 3, 1000, 2000, 3000, 4]])
    reference = load_model(open_checkpoint(tiny_model_dir))
    with torch.no_grad():
        ref = reference(input_ids=ids).logits
        got = model(input_ids=ids).logits
        # The same final hidden states through the original bf16 head: what the INT4 head alone changes.
        dense = model.model(input_ids=ids).last_hidden_state @ reference.lm_head.weight.T
    head_error = ((got - dense).pow(2).mean() / dense.pow(2).mean()).sqrt().item()
    # Measured: 0.0243 (relative RMS). The band is half to twice that: a head left in bf16 gives ~0, an INT8 head
    # ~16× less, a wrong scale or a wrongly loaded head ~1.
    assert 0.012 < head_error < 0.05, head_error
    # The whole model (INT4 decoder and head) against the bf16 one: measured max |Δ| 0.065 × max |logit|, the same
    # argmax at 6 of 6 positions.
    assert (got - ref).abs().max() < 0.08 * ref.abs().max()
    assert (got.argmax(-1) == ref.argmax(-1)).sum() >= 5


def test_gptq_lm_head_is_planned_as_gptq_after_the_last_layer(tiny_model_dir):
    from pixtral_quant.loading import open_checkpoint
    from pixtral_quant.plan import make_plan

    recipe = with_overrides(load_recipe("tiny-gptq-int4"), {"targets.lm_head": "int4"})
    entry = next(e for e in make_plan(open_checkpoint(tiny_model_dir).config, recipe).entries if e.name == "lm_head")
    assert entry.scheme == "gptq-int4" and "GPTQ on the final norm" in entry.reason


def test_a_second_precision_is_refused(tiny_model_dir):
    from pixtral_quant.loading import open_checkpoint
    from pixtral_quant.plan import make_plan

    recipe = with_overrides(load_recipe("tiny-gptq-int4"), {"targets.lm_head": "int8"})
    with pytest.raises(UsageError, match="cannot write the lm_head as int8"):
        make_plan(open_checkpoint(tiny_model_dir).config, recipe)


def test_gptq_calibrates_the_lm_head_after_the_last_layer(tiny_model_dir, tmp_path, gptq_recipe):
    """gptq-int4 with targets.lm_head: GPTQModel's solver on the lm_head (its loss is in the manifest), fed the
    final norm of the quantized decoder's outputs; the checkpoint loads with the head quantized."""
    from transformers import LlavaForConditionalGeneration

    from pixtral_quant.export.manifest import read_manifest

    recipe = with_overrides(gptq_recipe, {"targets.lm_head": "int4"})
    out = tmp_path / "out"
    result = convert(tiny_model_dir, recipe, out)
    assert "lm_head" in result.layer_loss and result.layer_loss["lm_head"] > 0
    assert read_manifest(out)["layer_loss"]["lm_head"] == result.layer_loss["lm_head"]
    model = LlavaForConditionalGeneration.from_pretrained(out, dtype=torch.float32, device_map="cpu")
    assert type(model.lm_head) is not torch.nn.Linear
    rtn = LlavaForConditionalGeneration.from_pretrained(  # same head, round-to-nearest: GPTQ's must differ
        convert(tiny_model_dir, with_overrides(load_recipe("tiny-rtn-int4"), {"targets.lm_head": "int4"}),
                tmp_path / "rtn").out, dtype=torch.float32, device_map="cpu")
    assert not torch.equal(model.lm_head.qweight, rtn.lm_head.qweight)


@pytest.mark.parametrize("rows", [4096, 10000])
def test_the_lm_head_solved_in_row_blocks_is_the_same_gptq(tiny_model_dir, tmp_path, rows):
    """capture.calibrate_head with `rows` (the 12B lm_head's working copies do not fit a 24 GiB CPU host at
    once): one Hessian, adopted by every block, gives the tensors of the all-rows solve (10000: a last block of
    another size) and the same loss."""
    from head_helpers import whole_and_blocks
    from pixtral_quant.config import GptqInt4
    from pixtral_quant.loading import open_checkpoint
    from pixtral_quant.schemes.gptq import GptqHandler

    ckpt, handler = open_checkpoint(tiny_model_dir), GptqHandler(GptqInt4())
    (whole, whole_loss), (blocks, blocks_loss) = whole_and_blocks(ckpt, handler.solver, tmp_path, rows)
    assert whole.keys() == blocks.keys() and whole["qweight"].shape[1] == ckpt.config.text_config.vocab_size
    for k in whole:
        assert torch.equal(whole[k], blocks[k]), k
    assert blocks_loss == pytest.approx(whole_loss, rel=1e-5)
