"""Pure arithmetic of pixtral_quant.memory against hand-computed numbers (no model, no weights)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pixtral_quant.config import BnbNf4, GptqInt4, GptqInt8, RtnInt8
from pixtral_quant.errors import UsageError
from pixtral_quant.memory.runtime import decoder_prefill_bytes, image_tokens, kv_bytes_per_token
from pixtral_quant.memory.settings import reserve_for
from pixtral_quant.memory.storage import Format, format_for, linear_bytes, linear_tensors
from pixtral_quant.memory.units import GIB, parse_size

TEXT_12B = SimpleNamespace(hidden_size=5120, intermediate_size=14336, num_hidden_layers=40, num_attention_heads=32,
                           num_key_value_heads=8, head_dim=128)
TEXT_LARGE = SimpleNamespace(hidden_size=12288, intermediate_size=28672, num_hidden_layers=88,
                             num_attention_heads=96, num_key_value_heads=8, head_dim=128)
VISION = SimpleNamespace(patch_size=16, image_size=1024)


def test_gptq_int4_g128_tensors_of_one_linear():
    # gate_proj of Pixtral-12B: in 5120, out 14336. qweight [5120·4/32, 14336] int32, qzeros [40, 14336·4/32]
    # int32, scales [40, 14336] fp16, g_idx [5120] int32.
    t = {s.suffix: (s.dtype, s.shape, s.nbytes) for s in linear_tensors(Format("gptq", bits=4), 5120, 14336)}
    assert t == {"qweight": ("int32", (640, 14336), 36_700_160), "qzeros": ("int32", (40, 1792), 286_720),
                 "scales": ("float16", (40, 14336), 1_146_880), "g_idx": ("int32", (5120,), 20_480)}


def test_gptq_int8_per_channel_and_bias():
    b = {s.suffix: s.nbytes for s in linear_tensors(Format("gptq", bits=8, group_size=-1), 256, 64, bias=True)}
    # qweight 64·64·4, qzeros 1·16·4, scales 1·64·2, g_idx 256·4, bias 64·2 (fp16)
    assert b == {"qweight": 16384, "qzeros": 64, "scales": 128, "g_idx": 1024, "bias": 128}
    with pytest.raises(ValueError, match="does not divide"):
        linear_bytes(Format("gptq", bits=4, group_size=128), 200, 64)


def test_bnb_formats():
    assert linear_bytes(Format("bnb-int8"), 768, 256) == 256 * 768 + 4 * 256 + 1
    nf4 = {s.suffix: s.nbytes for s in linear_tensors(Format("bnb-nf4", blocksize=64, double_quant=True), 768, 256)}
    blocks = 256 * 768 // 64  # 3072
    assert nf4["weight"] == 256 * 768 // 2 and nf4["weight.absmax"] == blocks
    assert nf4["weight.nested_absmax"] == 4 * 12 and nf4["weight.nested_quant_map"] == 1024
    assert nf4["weight.quant_map"] == 64 and 160 < nf4["weight.quant_state.bitsandbytes__nf4"] < 180
    plain = {s.suffix: s.nbytes for s in linear_tensors(Format("bnb-nf4", double_quant=False), 768, 256)}
    assert plain["weight.absmax"] == 4 * blocks and "weight.nested_absmax" not in plain


def test_12b_int4_decoder_linears_are_5_28_gib():
    # Per layer: q 5120→4096, k, v 5120→1024, o 4096→5120, gate, up 5120→14336, down 14336→5120.
    shapes = [(5120, 4096), (5120, 1024), (5120, 1024), (4096, 5120), (5120, 14336), (5120, 14336), (14336, 5120)]
    per_layer = sum(linear_bytes(Format("gptq", bits=4), i, o) for i, o in shapes)
    # in·out·(1/2 + 2/128 + 1/256) = in·out·133/256, plus 4 bytes of g_idx per input feature.
    assert per_layer == 272_629_760 * 133 // 256 + 4 * 44_032
    assert round(40 * per_layer / GIB, 2) == 5.28


def test_scheme_formats():
    assert format_for(GptqInt4()) == Format("gptq", bits=4, group_size=128)
    assert format_for(RtnInt8(group_size=-1)).group_size == -1
    assert format_for(GptqInt8(), "int8").bits == 8
    assert format_for(BnbNf4(blocksize=128)).blocksize == 128


def test_kv_cache_per_1k_tokens():
    assert kv_bytes_per_token(TEXT_12B) == 2 * 40 * 8 * 128 * 2 == 163_840
    assert kv_bytes_per_token(TEXT_12B) * 1024 / GIB == 0.15625
    assert kv_bytes_per_token(TEXT_LARGE) * 1024 / GIB == 0.34375
    assert kv_bytes_per_token(TEXT_12B, "float32") == 2 * 163_840


@pytest.mark.parametrize("size, rows, cols, tokens", [
    ((1024, 1024), 64, 64, 4160),   # 64·64 [IMG] + 64 [IMG_BREAK]/[IMG_END]
    ((1000, 500), 32, 63, 2048),    # each side up to a multiple of 16
    ((2048, 1024), 32, 64, 2080),   # longer side capped at 1024, aspect kept
])
def test_image_tokens(size, rows, cols, tokens):
    img = image_tokens(VISION, *size)
    assert (img.rows, img.cols, img.tokens) == (rows, cols, tokens)


def test_decoder_prefill_is_the_mlp_phase_for_12b():
    # 2 · T · H (residual + normed) + 3 · T · I (act(gate), up, product), bf16.
    assert decoder_prefill_bytes(TEXT_12B, 1000) == 2 * (2 * 1000 * 5120 + 3 * 1000 * 14336)


def test_sizes_and_reserve():
    assert parse_size("8GiB") == 8 * GIB and parse_size("14 GB") == 14 * 10**9 and parse_size("7.5GiB") == 7.5 * GIB
    assert parse_size("512MiB") == 2**29
    for bad in ("eight gigs", "7.5", 8):  # a bare number has no unit (tests/cli/test_conventions.py)
        with pytest.raises(UsageError):
            parse_size(bad)
    # The promises' definitions: 8 GiB → 7.5 GiB of tensors, 14 → 13.5, 80 → 75.
    assert [(c - reserve_for(c * GIB) / GIB) for c in (8, 14, 80)] == [7.5, 13.5, 75.0]
