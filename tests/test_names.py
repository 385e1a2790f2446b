"""Pure tests of the name tables, the q/k RoPE permutation and the params.json <-> config mapping."""

from __future__ import annotations

import json

import pytest
import torch

from pixtral_quant.assets import CONFIGS
from pixtral_quant.loading import names
from pixtral_quant.loading.params import config_to_params, params_to_config


# --- RoPE permutation -------------------------------------------------------------------------------

def test_permutation_and_inverse_round_trip():
    w = torch.randn(4 * 6, 5)  # 4 heads, head_dim 6, in 5
    hf = names.rope_native_to_hf(w, 4)
    assert not torch.equal(hf, w)  # it moves rows
    assert torch.equal(names.rope_hf_to_native(hf, 4), w)
    assert torch.equal(names.rope_native_to_hf(names.rope_hf_to_native(w, 4), 4), w)


def test_permutation_moves_rows_as_documented():
    # One head, head_dim 4: native rows (0, 1) and (2, 3) are rotary pairs; HF pairs rows (0, 2) and (1, 3).
    w = torch.arange(4.0).view(4, 1)
    assert names.rope_native_to_hf(w, 1).flatten().tolist() == [0.0, 2.0, 1.0, 3.0]
    # Two heads permute independently.
    w2 = torch.arange(8.0).view(8, 1)
    assert names.rope_native_to_hf(w2, 2).flatten().tolist() == [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]


def _rope_interleaved(x: torch.Tensor, pos: int, theta: float) -> torch.Tensor:
    """Mistral reference: complex rotation of (x[2i], x[2i+1]) by pos * theta^(-2i/d). x: [heads, d] float64."""
    d = x.shape[-1]
    angle = pos * theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    z = torch.view_as_complex(x.reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(z * torch.polar(torch.ones_like(angle), angle)).flatten(-2)


def _rope_half(x: torch.Tensor, pos: int, theta: float) -> torch.Tensor:
    """Hugging Face: rotate (x[i], x[i + d/2]) by the same angles (rotate_half). x: [heads, d] float64."""
    d = x.shape[-1]
    angle = pos * theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    cos, sin = torch.cat([angle, angle]).cos(), torch.cat([angle, angle]).sin()
    rotated = torch.cat([-x[..., d // 2:], x[..., : d // 2]], dim=-1)
    return x * cos + rotated * sin


@pytest.mark.parametrize("n_heads,head_dim", [(1, 8), (4, 16)])
def test_permutation_turns_interleaved_rope_into_rotate_half(n_heads, head_dim):
    """Rotate-half RoPE on permuted weights equals interleaved RoPE on the native weights (rows permuted)."""
    torch.manual_seed(0)
    w_native = torch.randn(n_heads * head_dim, 12, dtype=torch.float64)
    x = torch.randn(12, dtype=torch.float64)
    for pos in (0, 3, 17):
        q_native = _rope_interleaved((w_native @ x).view(n_heads, head_dim), pos, 1e4)
        q_hf = _rope_half((names.rope_native_to_hf(w_native, n_heads) @ x).view(n_heads, head_dim), pos, 1e4)
        expected = names.rope_native_to_hf(q_native.reshape(-1, 1), n_heads).view(n_heads, head_dim)
        torch.testing.assert_close(q_hf, expected, rtol=0, atol=1e-12)


def test_permutation_turns_native_2d_rope_into_transformers_pixtral_rope():
    """Vision: Mistral's 2D rope (precompute_freqs_cis_2d: pair k rotates by h * f[2k] for the first
    head_dim/4 pairs, by w * f[2k+1] after) on native q equals transformers' PixtralVisionRotaryEmbedding
    + apply_rotary_pos_emb on the permuted q, rows permuted the same way."""
    from transformers import PixtralVisionConfig
    from transformers.models.pixtral.modeling_pixtral import PixtralVisionRotaryEmbedding, apply_rotary_pos_emb

    heads, hd, height, width, theta = 2, 16, 3, 4, 1e4
    torch.manual_seed(0)
    w_native = torch.randn(heads * hd, 10, dtype=torch.float64)
    x = torch.randn(height * width, 10, dtype=torch.float64)
    freqs = theta ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    f_h = torch.outer(torch.arange(height, dtype=torch.float64), freqs[::2])
    f_w = torch.outer(torch.arange(width, dtype=torch.float64), freqs[1::2])
    angles = torch.cat([f_h[:, None].repeat(1, width, 1), f_w[None].repeat(height, 1, 1)], -1).reshape(-1, hd // 2)
    q = torch.view_as_complex((x @ w_native.T).reshape(-1, heads, hd // 2, 2).contiguous())
    q_native = torch.view_as_real(q * torch.polar(torch.ones_like(angles), angles)[:, None]).reshape(-1, heads * hd)

    cfg = PixtralVisionConfig(hidden_size=heads * hd, num_attention_heads=heads, head_dim=hd, rope_theta=theta)
    pos = torch.stack(torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij"), -1).reshape(-1, 2)
    cos, sin = PixtralVisionRotaryEmbedding(cfg)(x, pos)
    q_hf = (x @ names.rope_native_to_hf(w_native, heads).T).view(1, -1, heads, hd).transpose(1, 2)
    q_hf, _ = apply_rotary_pos_emb(q_hf, q_hf, cos, sin, unsqueeze_dim=0)
    expected = names.rope_native_to_hf(q_native.T, heads).T
    torch.testing.assert_close(q_hf[0].transpose(0, 1).reshape(-1, heads * hd), expected, rtol=0, atol=1e-5)


def test_permutation_rejects_odd_head_dim():
    with pytest.raises(ValueError):
        names.rope_native_to_hf(torch.zeros(6, 2), 2)  # head_dim 3


# --- name tables ------------------------------------------------------------------------------------

def _tiny_runtime_names() -> list[str]:
    from pixtral_quant.fixtures.train import tiny_config
    from pixtral_quant.loading.arch import expected_shapes

    return list(expected_shapes(tiny_config()))


def test_tables_are_one_to_one():
    names.check_tables()
    natives = [row[0] for row in names.NAME_TABLE]
    hfs = [row[1] for row in names.NAME_TABLE]
    assert len(set(natives)) == len(natives) and len(set(hfs)) == len(hfs)


@pytest.mark.parametrize("broken", [
    names.NAME_TABLE + (("norm.weight", "language_model.model.other_norm.weight", None),),  # native used twice
    names.NAME_TABLE + (("other.weight", "language_model.model.norm.weight", None),),  # HF used twice
    names.NAME_TABLE + (("layers.{i}.attention.wq.weight", "x.{i}.q", "text_q"),),  # pattern shadows a row
])
def test_check_tables_catches_a_row_that_is_not_one_to_one(broken):
    with pytest.raises(RuntimeError):
        names.check_tables(table=broken)


def test_check_tables_catches_overlapping_layout_prefixes():
    with pytest.raises(RuntimeError):
        names.check_tables(layout=names.LAYOUT_TABLE + (("language_model.", "model.text."),))


def test_every_model_tensor_round_trips_through_both_tables():
    runtime = _tiny_runtime_names()
    natives = set()
    for name in runtime:
        ckpt = names.runtime_to_checkpoint(name)
        assert names.checkpoint_to_runtime(ckpt) == name
        native, rope = names.hf_to_native_name(ckpt)
        assert names.native_to_hf_name(native) == (ckpt, rope)
        natives.add(native)
    assert len(natives) == len(runtime)  # injective on the real model's names
    assert names.native_to_hf_name("layers.3.attention.wk.weight") == \
        ("language_model.model.layers.3.self_attn.k_proj.weight", "text_k")


def test_runtime_to_native_permutes_q_and_k_only():
    from pixtral_quant.fixtures.train import tiny_config

    cfg = tiny_config()
    w = torch.randn(cfg.text_config.num_key_value_heads * 64, 256)
    name_k, out_k = names.runtime_to_native("model.language_model.layers.0.self_attn.k_proj.weight", w, cfg)
    assert name_k == "layers.0.attention.wk.weight"
    assert torch.equal(out_k, names.rope_hf_to_native(w, cfg.text_config.num_key_value_heads))
    name_v, out_v = names.runtime_to_native("model.language_model.layers.0.self_attn.v_proj.weight", w, cfg)
    assert name_v == "layers.0.attention.wv.weight" and out_v is w
    with pytest.raises(KeyError):
        names.runtime_to_native("model.language_model.layers.0.self_attn.q_proj.qweight", w, cfg)


# --- params.json <-> LlavaConfig --------------------------------------------------------------------

def test_shipped_native_params_round_trip():
    params = json.loads((CONFIGS / "pixtral-12b-native" / "params.json").read_text())
    assert config_to_params(params_to_config(params)) == params


def test_hf_12b_config_maps_to_the_shipped_native_params():
    from pixtral_quant.loading.hf import read_config

    params = config_to_params(read_config(CONFIGS / "pixtral-12b"),
                              {"image_break_token_id": 12, "image_end_token_id": 13})
    assert params == json.loads((CONFIGS / "pixtral-12b-native" / "params.json").read_text())


def test_params_to_config_fixes_pixtral_architecture():
    params = json.loads((CONFIGS / "pixtral-12b-native" / "params.json").read_text())
    cfg = params_to_config(params)
    assert cfg.vision_config.hidden_act == "silu"  # PixtralVisionConfig defaults to gelu
    assert cfg.text_config.head_dim == 128 and cfg.vision_config.head_dim == 64
    assert cfg.text_config.rope_parameters["rope_theta"] == 1e9
    assert cfg.image_token_index == 10 and cfg.multimodal_projector_bias is True
