"""Loading Pixtral from HF and Mistral-native directories: same model either way, every layout and sharding."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open

from pixtral_quant.errors import InputError
from pixtral_quant.loading import load_model, open_checkpoint, write_hf, write_native
from pixtral_quant.loading.names import rope_hf_to_native


def _tensors(directory) -> dict[str, torch.Tensor]:
    """Every tensor of every safetensors file in `directory`, by on-disk name (tiny model only)."""
    out = {}
    for file in sorted(directory.glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            out.update({k: f.get_tensor(k) for k in f.keys()})
    return out


def _runtime(ckpt) -> dict[str, torch.Tensor]:
    return dict(ckpt.iter_tensors())


@pytest.fixture(scope="module")
def image_batch(tiny_model_dir):
    """An image prompt encoded with the v7m1 tokenizer by mistral-common: input_ids, pixel_values, ..."""
    from PIL import Image

    from pixtral_quant.calibration.encode import collate, encode
    from pixtral_quant.loading.tokenizer import open_mistral_tokenizer

    img = Image.new("RGB", (48, 32), (200, 30, 30))
    img.paste((20, 20, 220), (8, 8, 24, 24))
    tok = open_mistral_tokenizer(open_checkpoint(tiny_model_dir).tokenizer)
    msg = [{"role": "user", "content": [{"type": "image", "image": img}, {"type": "text", "text": "What colour?"}]}]
    return collate([encode(tok, msg)])


def test_tiny_fixture_is_hf_checkpoint_layout(tiny_model_dir):
    ckpt = open_checkpoint(tiny_model_dir)
    assert (ckpt.format, ckpt.layout, ckpt.tokenizer.name) == ("hf", "checkpoint", "tokenizer.model.v7m1")
    assert len(ckpt.tensors) == 63


def test_native_twin_files_and_permuted_q(tiny_model_dir, native_twin_dir):
    ckpt = open_checkpoint(native_twin_dir)
    assert (ckpt.format, ckpt.layout) == ("native", "native")
    assert sorted(p.name for p in native_twin_dir.iterdir()) == \
        ["consolidated.safetensors", "params.json", "tokenizer.model.v7m1"]
    params = json.loads((native_twin_dir / "params.json").read_text())
    assert params["vision_encoder"]["image_break_token_id"] == 14  # from the v7m1 tokenizer
    hf, native = _tensors(tiny_model_dir), _tensors(native_twin_dir)
    heads = ckpt.config.text_config.num_attention_heads
    q = hf["language_model.model.layers.1.self_attn.q_proj.weight"]
    assert torch.equal(native["layers.1.attention.wq.weight"], rope_hf_to_native(q, heads))
    assert not torch.equal(native["layers.1.attention.wq.weight"], q)


def test_hf_and_native_twin_give_the_same_logits(tiny_model_dir, native_twin_dir, image_batch):
    with torch.no_grad():
        a = load_model(open_checkpoint(tiny_model_dir))(**image_batch).logits
        b = load_model(open_checkpoint(native_twin_dir))(**image_batch).logits
    assert a.dtype == torch.float32 and a.shape[1] == image_batch["input_ids"].shape[1]
    assert (image_batch["input_ids"] == 10).sum() == 6  # the image reached the model: 2 x 3 [IMG] tokens
    assert (a - b).abs().max().item() <= 1e-5


def test_hf_to_native_to_hf_is_bit_identical(tiny_model_dir, native_twin_dir, tmp_path):
    back = write_hf(open_checkpoint(native_twin_dir), tmp_path / "back")
    original, again = _tensors(tiny_model_dir), _tensors(back)
    assert original.keys() == again.keys()
    for name, t in original.items():
        assert again[name].dtype == t.dtype and torch.equal(again[name], t), name


def test_load_model_equals_transformers_from_pretrained(tiny_model_dir):
    from transformers import LlavaForConditionalGeneration

    ours = load_model(open_checkpoint(tiny_model_dir), dtype=torch.float32)
    ref = LlavaForConditionalGeneration.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert not ours.training
    ref_state = dict(ref.named_buffers()) | ref.state_dict()
    for name, t in (dict(ours.named_buffers()) | ours.state_dict()).items():
        assert torch.equal(t, ref_state[name]), name  # inv_freq buffers rebuilt correctly too


@pytest.mark.parametrize("layout", ["runtime", "checkpoint"])
def test_both_hf_layouts_load(tiny_model_dir, tmp_path, layout):
    source = open_checkpoint(tiny_model_dir)
    out = write_hf(source, tmp_path / layout, layout=layout)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert ("lm_head.weight" in f.keys()) == (layout == "runtime")
    ckpt = open_checkpoint(out)
    assert ckpt.layout == layout
    expected = _runtime(source)
    got = _runtime(ckpt)
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)


def test_sharded_checkpoints_load(tiny_model_dir, tmp_path):
    source = open_checkpoint(tiny_model_dir)
    expected = _runtime(source)
    hf = open_checkpoint(write_hf(source, tmp_path / "hf", max_shard_bytes=12 * 2**20))
    native = open_checkpoint(write_native(source, tmp_path / "native", max_shard_bytes=12 * 2**20))
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    count = len(native.weight_files)
    assert native.weight_files[0].name == f"consolidated-00001-of-{count:05d}.safetensors"
    for ckpt in (hf, native):
        assert len(ckpt.weight_files) > 1
        got = _runtime(ckpt)
        assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)


def _config_with(tiny_model_dir, out, **text):
    """A directory with the tiny weights (symlinked) and tokenizer, and config.json text_config edited."""
    out.mkdir()
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    cfg["text_config"].update(text)
    (out / "config.json").write_text(json.dumps(cfg))
    for name in ("model.safetensors", "tokenizer.model.v7m1"):
        os.symlink(tiny_model_dir / name, out / name)
    return out


def test_missing_tensors_are_named(tiny_model_dir, tmp_path):
    with pytest.raises(InputError, match=r"missing tensors: .*layers\.4\."):
        open_checkpoint(_config_with(tiny_model_dir, tmp_path / "five", num_hidden_layers=5))


def test_unexpected_tensors_are_named(tiny_model_dir, tmp_path):
    with pytest.raises(InputError, match=r"unexpected tensors: .*layers\.3\."):
        open_checkpoint(_config_with(tiny_model_dir, tmp_path / "three", num_hidden_layers=3))


def test_config_only_directory_opens_but_does_not_load():
    ckpt = open_checkpoint("pixtral-12b")
    assert not ckpt.has_weights and ckpt.tokenizer is None and ckpt.layout is None
    with pytest.raises(InputError, match="no weights"):
        load_model(ckpt)


def test_hub_id_offline_asks_for_a_local_path(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError) as err:
        open_checkpoint("no-such-org/no-such-pixtral")
    assert "offline" in err.value.message and "local" in err.value.fix


def test_writing_over_existing_weights_is_refused(tiny_model_dir, tmp_path):
    source = open_checkpoint(tiny_model_dir)
    write_hf(source, tmp_path / "out")
    with pytest.raises(InputError, match="already holds weights"):
        write_hf(source, tmp_path / "out", max_shard_bytes=12 * 2**20)
