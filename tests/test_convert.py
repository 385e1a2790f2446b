"""`convert` end to end on the tiny model: the checkpoint files, the manifest, reload with plain transformers
(GPTQModel.load cannot load it yet: a strict xfail below says why), determinism, and the plan/calibration
evidence."""

from __future__ import annotations

import json
import re

import pytest
import torch

from pixtral_quant.calibration.dataset import load_set
from pixtral_quant.config import with_overrides
from pixtral_quant.convert import convert
from pixtral_quant.export.manifest import read_manifest, sha256
from pixtral_quant.recipes import load_recipe

DECODER_LINEARS = 28  # 4 layers × 7


def test_gptq_checkpoint_files_and_config(gptq_tiny, tiny_model_dir):
    out, result = gptq_tiny
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "manifest.json", "generation_config.json",
            "tokenizer.model.v7m1"} <= names
    assert not out.with_name(out.name + ".partial").exists()
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "gptq" and qc["bits"] == 4 and qc["group_size"] == 128 and qc["sym"] is True
    assert qc["desc_act"] is False and qc["checkpoint_format"] == "gptq"
    assert qc["block_name_to_quantize"] == "model.language_model.layers"
    assert json.loads((out / "config.json").read_text())["text_config"]["head_dim"] == 64  # vLLM pitfall
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert f.get_tensor("language_model.model.layers.0.self_attn.q_proj.qweight").shape == (256 // 8, 256)
    assert "language_model.model.layers.0.self_attn.q_proj.weight" not in keys  # checkpoint spelling, quantized
    assert "vision_tower.transformer.layers.0.attention.q_proj.weight" in keys  # vision tower left bf16
    assert "language_model.lm_head.weight" in keys
    assert sum(k.endswith(".qweight") for k in keys) == DECODER_LINEARS
    assert result.bytes_after == (out / "model.safetensors").stat().st_size  # one shard at this size
    assert result.bytes_before == (tiny_model_dir / "model.safetensors").stat().st_size > result.bytes_after


def test_manifest_records_recipe_versions_calibration_loss_and_hashes(gptq_tiny, gptq_recipe, tiny_model_dir):
    out, result = gptq_tiny
    m = read_manifest(out)
    assert m["recipe"] == gptq_recipe.to_dict()
    assert m["versions"]["gptqmodel"] and m["versions"]["transformers"] and m["versions"]["torch"]
    cal = gptq_recipe.calibration
    expected = load_set(cal.set, tiny_model_dir / "tokenizer.model.v7m1", num_samples=cal.num_samples,
                        seed=cal.seed, max_tokens=cal.max_tokens).content_hash
    assert m["calibration"]["content_hash"] == expected
    planned_names = sorted(e["name"] for e in m["plan"] if e["scheme"])
    assert sorted(m["layer_loss"]) == planned_names and len(planned_names) == DECODER_LINEARS
    assert m["layer_loss"] == {k: result.layer_loss[k] for k in planned_names}  # the solver's numbers, as floats
    files = {p.name for p in out.iterdir() if p.name not in ("manifest.json", "README.md")}  # the card: test_card
    assert set(m["files"]) == files
    for name, info in m["files"].items():
        assert info["sha256"] == sha256(out / name)
    planned = [e for e in m["plan"] if e["scheme"]]
    assert len(planned) == DECODER_LINEARS and len(m["plan"]) == DECODER_LINEARS + 14 + 2 + 1


@torch.no_grad()
def test_layer_loss_is_the_gptq_objective_of_the_written_weights(gptq_tiny, gptq_recipe, tiny_model_dir,
                                                                 tmp_path):
    """Each layer-0 Linear's manifest loss, recomputed: GPTQ's objective ½·Σ_rows δ·H·δᵀ / n, with δ the written
    (dequantized) weight minus the original, H = 2·XᵀX / n over the n calibration tokens that Linear saw (+ the
    recipe's damp_percent × mean diagonal). A loss recorded under the wrong name, zero, or not the solve's own
    would miss by far more than the 0.2 % the float16 scales of the checkpoint allow (measured: 0.05 %)."""
    from safetensors import safe_open

    from pixtral_quant import capture
    from pixtral_quant.calibration.dataset import open_tokenizer
    from pixtral_quant.loading import open_checkpoint
    from pixtral_quant.schemes.intquant import from_gptq_v1

    out, _ = gptq_tiny
    losses, cal = read_manifest(out)["layer_loss"], gptq_recipe.calibration
    ckpt = open_checkpoint(tiny_model_dir)
    cset = load_set(cal.set, ckpt.tokenizer, num_samples=cal.num_samples, seed=cal.seed, max_tokens=cal.max_tokens)
    shell = capture.load_shell(ckpt, "cpu", torch.float32)
    store = capture.ActivationStore(1 << 30, tmp_path / "spill")
    kwargs, _ = capture.capture_inputs(shell, iter(cset), open_tokenizer(ckpt.tokenizer), "cpu", store)
    layer, raw = capture.load_layer(ckpt, shell.config.text_config, 0, "cpu", torch.float32)
    names = [n for group in capture.SUBLAYER_GROUPS for n in group]
    inputs = {n: [] for n in names}
    hooks = [layer.get_submodule(n).register_forward_hook(lambda m, a, o, n=n: inputs[n].append(a[0].reshape(
        -1, a[0].shape[-1]).double())) for n in names]
    capture.run_layer(layer, store, kwargs, "cpu", update=False)  # one group (not true-sequential): all see these
    for h in hooks:
        h.remove()
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        for name in names:
            key = f"{capture.LAYERS}0.{name}"  # manifest: runtime names; the file: checkpoint names
            stored = f"language_model.model.layers.0.{name}"
            written = from_gptq_v1({k: f.get_tensor(f"{stored}.{k}") for k in ("qweight", "qzeros", "scales", "g_idx")},
                                   gptq_recipe.scheme.bits).dequantize().double()
            delta = written - raw[f"{name}.weight"].double()
            x = torch.cat(inputs[name])
            n = x.shape[0]
            hessian = 2 * x.T @ x / n
            hessian += gptq_recipe.scheme.damp_percent * hessian.diagonal().mean() * torch.eye(len(hessian),
                                                                                             dtype=torch.float64)
            expected = 0.5 * torch.einsum("oi,ij,oj->", delta, hessian, delta).item() / n
            assert losses[key] == pytest.approx(expected, rel=0.002), name


def test_vision_tower_ran_for_every_image_sample(gptq_tiny):
    _, result = gptq_tiny
    stats = result.stats
    assert len(stats.images) == 8 and all(n >= 1 for n in stats.images)  # every tiny task shows an image
    assert stats.vision_images == stats.images  # each sample's images went through the vision tower


def test_text_only_calibration_sends_no_image(tiny_model_dir, tmp_path):
    """The same capture with images stripped: the vision tower never runs (the images-vs-text comparison's
    control arm). Uses the capture stage alone, not a full conversion."""
    from pixtral_quant import capture
    from pixtral_quant.calibration.dataset import open_tokenizer
    from pixtral_quant.loading import open_checkpoint

    ckpt = open_checkpoint(tiny_model_dir)
    cset = load_set("tiny", ckpt.tokenizer, num_samples=4, seed=0)
    shell = capture.load_shell(ckpt, "cpu", torch.float32)
    tok = open_tokenizer(ckpt.tokenizer)
    store_a = capture.ActivationStore(1 << 30, tmp_path / "a")
    _, with_images = capture.capture_inputs(shell, iter(cset), tok, "cpu", store_a)
    store_b = capture.ActivationStore(0, tmp_path / "b")  # budget 0: every activation spills to disk
    _, text_only = capture.capture_inputs(shell, (capture.strip_images(m) for m in cset), tok, "cpu", store_b)
    assert with_images.vision_images == with_images.images and sum(with_images.images) >= 4
    assert text_only.vision_images == [0] * 4 and text_only.images == [0] * 4
    assert store_b.spilled == 4 and store_b[0].shape[1] == text_only.tokens[0]
    assert all(t_img > t_txt for t_img, t_txt in zip(with_images.tokens, text_only.tokens))


def _generate(path):
    """Reload with plain transformers and generate from an image prompt (vision tower, projector, decoder)."""
    import random

    from transformers import LlavaForConditionalGeneration

    from pixtral_quant.calibration.encode import collate, encode
    from pixtral_quant.fixtures import tasks as T
    from pixtral_quant.loading.tokenizer import open_mistral_tokenizer

    model = LlavaForConditionalGeneration.from_pretrained(path, dtype=torch.bfloat16, device_map="cpu")
    tok = open_mistral_tokenizer(path / "tokenizer.model.v7m1")
    sample = T.make_sample(random.Random(7), "two_images")
    batch = collate([encode(tok, sample.messages())])
    batch["pixel_values"] = batch["pixel_values"].to(torch.bfloat16)
    prompt = batch["input_ids"].shape[1]
    out = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert out.shape[1] > prompt  # generated at least one token (it may stop early at </s>)
    model.new_tokens = out[0, prompt:].tolist()
    return model


def test_gptq_output_reloads_with_plain_transformers(gptq_tiny, tiny_model_dir):
    out, _ = gptq_tiny
    model = _generate(out)
    assert model.new_tokens == _generate(tiny_model_dir).new_tokens  # same greedy answer as the bf16 model
    layer = model.model.language_model.layers[0]
    assert type(layer.self_attn.q_proj) is not torch.nn.Linear  # a GPTQ kernel module
    assert type(model.model.vision_tower.transformer.layers[0].attention.q_proj) is torch.nn.Linear


GPTQMODEL_REFUSAL = (r"Unrecognized configuration class <class '[\w.]*LlavaConfig'> for this kind of AutoModel: "
                     r"AutoModelForCausalLM")


@pytest.mark.xfail(strict=True, raises=ValueError, reason=(
    "GPTQModel 7.6 (the newest that installs beside mistral-common) has no model definition for model_type llava "
    "and falls back to AutoModelForCausalLM, which rejects LlavaConfig (ValueError: Unrecognized configuration "
    "class <class '...LlavaConfig'> for this kind of AutoModel: AutoModelForCausalLM). Registering one by hand gets "
    "further, then GPTQModel wants runtime tensor names (model.language_model.*) while we write the checkpoint "
    "spelling that transformers' save_pretrained writes and every vLLM Llava loader reads. Strict: a GPTQModel that "
    "loads it turns this red, to be flipped into a plain test; a different ValueError fails it too."))
def test_gptq_output_loads_with_gptqmodel(gptq_tiny, monkeypatch):
    """GPTQModel.load of our GPTQ checkpoint: fails today (the xfail's reason); plain transformers is what loads
    it (test_gptq_output_reloads_with_plain_transformers). GPTQModel also insists on a Hugging Face tokenizer
    (tokenizer.json), which real Pixtral HF checkpoints ship (convert copies it) but the tiny model, with only the
    Mistral tokenizer.model.v7m1, does not: that step is stubbed so the test reaches the model loader."""
    import gptqmodel.models.loader as loader
    from gptqmodel import GPTQModel

    monkeypatch.setattr(loader, "load_hf_tokenizer", lambda *a, **k: None)
    out, _ = gptq_tiny
    try:
        model = GPTQModel.load(str(out), device="cpu")
    except ValueError as exc:  # the expected failure is this refusal only; any other ValueError fails the test
        if not re.search(GPTQMODEL_REFUSAL, str(exc)):
            pytest.fail(f"GPTQModel.load failed, but not as the xfail says: {exc}")
        raise
    assert sum(type(m).__name__ != "Linear" and hasattr(m, "qweight") for m in model.model.modules()) == DECODER_LINEARS


EVAL_PROMPTS = 48  # held-out prompts per scheme: ~1-8 s of generation each on one CPU thread
# reports/convert-tiny.md measured these schemes at 0.993-0.997 on all 300 held-out prompts (the bf16 model 0.993);
# on these 48 each scored 1.0. 0.95 leaves room for two flipped answers (46 / 48 = 0.958); broken weights (a zero
# point off by one step, rows written in the wrong order) score 0. The tiny model shrugs off a uniform scale error
# (every RTN scale doubled: 0.9375; every bnb-int8 SCB doubled: 0.958), which the scheme tests pin instead.
MIN_ACCURACY = 0.95


@pytest.fixture(scope="module")
def eval_prompts():
    from pixtral_quant.engines import evalrun

    return evalrun.eval_prompts(EVAL_PROMPTS)


@pytest.mark.parametrize("recipe", ["tiny-rtn-int4", "tiny-rtn-int8", "tiny-bnb-int8", "tiny-bnb-nf4"])
def test_data_free_schemes_reload_and_generate(recipe, tiny_model_dir, tmp_path, eval_prompts):
    """Each data-free scheme's checkpoint reloads with plain transformers with the planned Linears quantized and
    answers the tiny model's held-out image prompts (evalrun: greedy, bf16) as accurately as measured."""
    from transformers import LlavaForConditionalGeneration

    from pixtral_quant.engines import evalrun

    out = tmp_path / "out"
    result = convert(tiny_model_dir, load_recipe(recipe), out)
    assert len(result.plan.quantized()) == DECODER_LINEARS and result.stats is None
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == ("bitsandbytes" if "bnb" in recipe else "gptq")
    accuracy = evalrun.accuracy(eval_prompts, evalrun.from_transformers(out, eval_prompts))
    assert accuracy >= MIN_ACCURACY, accuracy
    model = LlavaForConditionalGeneration.from_pretrained(out, dtype=torch.bfloat16, device_map="cpu")
    kind = type(model.model.language_model.layers[0].mlp.down_proj).__name__
    assert kind != "Linear", kind
    # What the plan keeps in bf16 stays a plain Linear after the reload (skip lists match the runtime names).
    assert type(model.model.vision_tower.transformer.layers[0].attention.q_proj) is torch.nn.Linear
    assert type(model.model.multi_modal_projector.linear_1) is torch.nn.Linear
    assert type(model.lm_head) is torch.nn.Linear


def test_second_convert_is_byte_identical(gptq_tiny, gptq_recipe, tiny_model_dir, tmp_path):
    first, _ = gptq_tiny
    second = tmp_path / "again"
    convert(tiny_model_dir, gptq_recipe, second)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_bnb_int8_can_take_the_optional_targets(tiny_model_dir, tmp_path):
    recipe = with_overrides(load_recipe("tiny-bnb-int8"), {"targets.lm_head": "int8", "targets.projector": "int8"})
    out = tmp_path / "out"
    result = convert(tiny_model_dir, recipe, out)
    assert len(result.plan.quantized()) == DECODER_LINEARS + 1 + 2
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["llm_int8_skip_modules"] == ["model.vision_tower", "vision_tower"]
    model = _generate(out)
    assert type(model.lm_head).__name__ == "Linear8bitLt"
    assert type(model.model.multi_modal_projector.linear_1).__name__ == "Linear8bitLt"
    assert type(model.model.vision_tower.transformer.layers[0].attention.q_proj) is torch.nn.Linear
