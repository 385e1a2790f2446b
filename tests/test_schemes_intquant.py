"""Integer quantization math (schemes/intquant.py) on tiny tensors, and its equality with GPTQModel's."""

from __future__ import annotations

import pytest
import torch

from pixtral_quant.schemes import intquant as iq
from pixtral_quant.validate.metrics import sqnr_db


def weight(out=64, inp=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(out, inp, generator=g) * 0.02


def test_pack_layout_lowest_bits_first():
    values = torch.arange(1, 9, dtype=torch.int32).view(8, 1)  # 8 nibbles → one word
    assert iq.pack_rows(values, 4).item() == 0x87654321 - 2**32  # int32 view of 0x87654321
    assert torch.equal(iq.unpack_rows(iq.pack_rows(values, 4), 4), values)
    bytes_ = torch.tensor([[1], [2], [3], [255]], dtype=torch.int32)
    assert iq.pack_rows(bytes_, 8).item() == 0xFF030201 - 2**32


@pytest.mark.parametrize("bits", [4, 8])
def test_pack_roundtrip_random(bits):
    v = torch.randint(0, 2**bits, (64, 24), dtype=torch.int32)
    assert torch.equal(iq.unpack_rows(iq.pack_rows(v, bits), bits), v)


@pytest.mark.parametrize("bits,group,min_db", [(4, 128, 17.0), (4, -1, 14.0), (8, 128, 40.0)])
def test_rtn_error_is_bounded(bits, group, min_db):
    w = weight()
    qt = iq.rtn(w, bits, group, sym=True)
    assert qt.q.min() >= 0 and qt.q.max() <= 2**bits - 1
    assert qt.scale.shape == (64, 1 if group == -1 else 256 // group)
    assert (qt.zero == 2 ** (bits - 1)).all()  # symmetric: fixed zero point
    # Each weight is within half a step of its group's grid (clamping only touches +max, by one step).
    step = qt.scale[:, qt.g_idx.long()]
    assert ((qt.dequantize() - w).abs() <= step * 1.0001).all()
    assert sqnr_db(w, qt.dequantize()) > min_db


def test_rtn_asymmetric_and_all_zero_group():
    w = weight()
    w[:, :128] = 0.0
    qt = iq.rtn(w, 4, 128, sym=False)
    assert torch.equal(qt.dequantize()[:, :128], torch.zeros(64, 128))
    assert sqnr_db(w[:, 128:], qt.dequantize()[:, 128:]) > 17


def test_gptq_v1_tensors_roundtrip():
    w = weight()
    qt = iq.rtn(w, 4, 128, sym=True)
    t = iq.to_gptq_v1(qt, bias=torch.ones(64))
    assert t["qweight"].shape == (256 // 8, 64) and t["qweight"].dtype == torch.int32
    assert t["qzeros"].shape == (2, 64 // 8) and t["scales"].shape == (2, 64) and t["scales"].dtype == torch.float16
    assert torch.equal(t["g_idx"], torch.arange(256, dtype=torch.int32) // 128)
    back = iq.from_gptq_v1(t, 4)
    assert torch.equal(back.q, qt.q) and torch.equal(back.zero, qt.zero)
    # v1 stores zero − 1: 8 → 7 in every nibble
    assert (iq.unpack_rows(t["qzeros"].T.contiguous(), 4) == 7).all()
    assert torch.allclose(back.dequantize(), qt.dequantize(), rtol=1e-3, atol=1e-6)


def test_from_dequantized_recovers_the_integers():
    qt = iq.rtn(weight(), 8, 128, sym=True)
    again = iq.from_dequantized(qt.dequantize(), qt.scale, qt.zero, qt.g_idx, 8)
    assert torch.equal(again.q, qt.q)


def test_group_size_must_divide():
    with pytest.raises(ValueError, match="does not divide"):
        iq.rtn(weight(inp=256), 4, 96, sym=True)


# --- against GPTQModel (the reference implementation of these conventions) ---------------------------------

@pytest.fixture(scope="module")
def gptqmodel():
    return pytest.importorskip("gptqmodel", reason="GPTQModel is in the 'gptq' extra (installed by dev)")


@pytest.mark.parametrize("bits", [4, 8])
def test_rtn_equals_gptqmodel_quantizer(gptqmodel, bits):
    from gptqmodel import QuantizeConfig
    from gptqmodel.quantization.quantizer import Quantizer

    w = weight()
    quantizer = Quantizer(QuantizeConfig(bits=bits, group_size=128, sym=True))
    quantizer.configure(perchannel=True)
    expected = torch.cat([_rtn_block(quantizer, w[:, i:i + 128]) for i in range(0, 256, 128)], dim=1)
    assert torch.equal(iq.rtn(w, bits, 128, sym=True).dequantize(), expected)


def _rtn_block(quantizer, block):
    quantizer.find_params(block, weight=True)
    return quantizer.quantize(block)


@pytest.mark.parametrize("bits", [4, 8])
def test_packing_equals_gptqmodel_torch_quant_linear(gptqmodel, bits):
    """GPTQModel packs true zeros (its v2); its v1 export subtracts one from every zero. Same qweight,
    same scales, and our qzeros = its qzeros with zero − 1."""
    from gptqmodel.nn_modules.qlinear.torch import TorchLinear

    w = weight()
    qt = iq.rtn(w, bits, 128, sym=True)
    linear = torch.nn.Linear(256, 64, bias=False)
    linear.weight.data = qt.dequantize()
    ql = TorchLinear(bits=bits, group_size=128, sym=True, desc_act=False, in_features=256, out_features=64,
                     bias=False, register_buffers=True)
    ql.pack_original(linear, qt.scale, qt.zero, qt.g_idx)
    ours = iq.to_gptq_v1(qt)
    assert torch.equal(ours["qweight"], ql.qweight)
    assert torch.equal(ours["scales"], ql.scales)
    v2_zeros = iq.unpack_rows(ql.qzeros.T.contiguous(), bits)
    assert torch.equal(iq.unpack_rows(ours["qzeros"].T.contiguous(), bits), v2_zeros - 1)


@pytest.mark.parametrize("bits", [4, 8])
def test_row_blocks_give_the_same_tensors(bits, monkeypatch):
    """RtnHandler quantizes ROW_BLOCK output rows at a time (bounded temporaries on a 131072-row lm_head): the
    tensors equal one pass over all rows, bit for bit, with a last block shorter than the others."""
    from pixtral_quant.config import RtnInt4, RtnInt8
    from pixtral_quant.schemes import rtn

    torch.manual_seed(0)
    w, b = torch.randn(1000, 256, dtype=torch.bfloat16), torch.randn(1000, dtype=torch.bfloat16)
    handler = rtn.RtnHandler(RtnInt4() if bits == 4 else RtnInt8())
    whole = handler.quantize("x", w, b)
    monkeypatch.setattr(rtn, "ROW_BLOCK", 96)
    blocks = handler.quantize("x", w, b)
    assert whole.keys() == blocks.keys() == {"qweight", "qzeros", "scales", "g_idx", "bias"}
    for k in whole:
        assert torch.equal(whole[k], blocks[k]), k
