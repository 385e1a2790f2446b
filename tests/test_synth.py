"""Synthetic checkpoints: real shapes, both formats, streamed one tensor at a time, reproducible, outliers."""

from __future__ import annotations

import hashlib
import json
import weakref

import pytest
import torch
from click.testing import CliRunner

from pixtral_quant.cli import main
from pixtral_quant.errors import InputError
from pixtral_quant.loading import open_checkpoint
from pixtral_quant.loading.arch import expected_shapes
from pixtral_quant.synth import Outliers, ordered_specs, synthesize, with_depth
from pixtral_quant.synth import weights as W
from pixtral_quant.synth.writer import plan_shards


def digest(directory) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.glob("*.safetensors"))}


def test_hf_sharded_checkpoint_opens_and_loads_in_transformers(tmp_path):
    from transformers import LlavaForConditionalGeneration

    result = synthesize("tiny", tmp_path / "a", max_shard_bytes=10_000_000)
    assert len(result.files) == 3 and (tmp_path / "a" / "model.safetensors.index.json").is_file()
    ckpt = open_checkpoint(tmp_path / "a")  # checks every name and shape against the config
    assert ckpt.format == "hf" and ckpt.layout == "checkpoint"
    assert result.tensor_bytes == sum(t.nbytes for t in ckpt.tensors.values())
    model = LlavaForConditionalGeneration.from_pretrained(tmp_path / "a")
    lm = model.model.language_model
    assert torch.equal(lm.norm.weight, torch.ones_like(lm.norm.weight))
    assert 0.018 < float(lm.layers[0].mlp.up_proj.weight.detach().float().std()) < 0.022
    assert model.model.multi_modal_projector.linear_1.bias.abs().max() == 0


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    synthesize("tiny", tmp_path / "a", layers=1)
    synthesize("tiny", tmp_path / "b", layers=1)
    synthesize("tiny", tmp_path / "c", layers=1, seed=1)
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")


def test_native_format_and_depth(tmp_path):
    result = synthesize("tiny", tmp_path / "n", fmt="native", layers=2)
    ckpt = open_checkpoint(tmp_path / "n")
    assert ckpt.format == "native" and ckpt.config.text_config.num_hidden_layers == 2
    assert result.files == ["consolidated.safetensors"]
    params = json.loads((tmp_path / "n" / "params.json").read_text())
    assert params["n_layers"] == 2 and params["vision_encoder"]["image_break_token_id"] == 14  # v7m1 ids


def test_real_shapes_of_pixtral_12b_and_large_without_writing():
    for name, layers in (("pixtral-12b", 2), ("pixtral-large", 1)):
        config = with_depth(open_checkpoint(name).config, layers)
        specs = ordered_specs(config, "bfloat16", "hf")
        assert {rt: s.shape for rt, s in specs} == expected_shapes(config)
        shards = plan_shards([s for _, s in specs], 2**30)
        assert all(sum(s.nbytes for s in part) <= 2**30 or len(part) == 1 for part in shards)
    assert dict(specs)["model.language_model.embed_tokens.weight"].shape == (32768, 12288)


def test_one_tensor_in_memory_at_a_time(tmp_path, monkeypatch):
    alive: list[weakref.ref] = []
    overlaps = []
    real = W.make_tensor

    def tracked(*args, **kwargs):
        overlaps.append(sum(ref() is not None for ref in alive))
        t = real(*args, **kwargs)
        alive.append(weakref.ref(t))
        return t

    monkeypatch.setattr("pixtral_quant.synth.make_tensor", tracked)
    synthesize("tiny", tmp_path / "s", layers=2, max_shard_bytes=5_000_000)
    assert len(overlaps) > 30 and max(overlaps) == 0  # every earlier tensor was freed before the next was made


def test_outlier_columns():
    gen_free = W.make_tensor("model.language_model.layers.0.mlp.down_proj.weight", (256, 768), torch.float32, 0)
    planted = W.make_tensor("model.language_model.layers.0.mlp.down_proj.weight", (256, 768), torch.float32, 0,
                            outliers=Outliers(3))
    col_max = planted.abs().amax(0) / gen_free.abs().amax(0)
    big = col_max > 10
    assert int(big.sum()) == 3 and float(col_max[big].min()) >= 20 and float(col_max[big].max()) <= 100
    assert torch.equal(planted[:, ~big], gen_free[:, ~big])
    vision = W.make_tensor("model.vision_tower.transformer.layers.0.feed_forward.up_proj.weight", (64, 128),
                           torch.float32, 0, outliers=Outliers(3))
    assert float(vision.abs().max()) < 0.2  # only decoder Linears get outliers


def test_cli(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(main, ["synth", "--config", "tiny", "--layers", "1", "--out", str(tmp_path / "x"), "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["layers"] == 1
    again = runner.invoke(main, ["synth", "--config", "tiny", "--out", str(tmp_path / "x")])
    assert again.exit_code == 2 and "not empty" in again.stderr
    zero = runner.invoke(main, ["synth", "--config", "tiny", "--layers", "0", "--out", str(tmp_path / "y")])
    assert zero.exit_code == 2 and "--layers" in zero.stderr
    with pytest.raises(InputError):
        synthesize(tmp_path / "nowhere", tmp_path / "z")


def test_config_only_source_gets_the_real_tokenizer_under_its_usual_name(tmp_path):
    from pixtral_quant.diagnostics.rss import synthetic_config

    config_dir = synthetic_config(tmp_path / "cfg", 256)
    synthesize(config_dir, tmp_path / "m", layers=1)
    ckpt = open_checkpoint(tmp_path / "m")  # needs a tokenizer next to the weights
    assert ckpt.tokenizer.name == "tokenizer.model.v7m1" and ckpt.config.text_config.hidden_size == 256
