"""bnb-int8 / bnb-nf4 handlers: bitsandbytes' own quantizers, serialized as transformers does."""

from __future__ import annotations

import pytest
import torch

from pixtral_quant.config import BnbInt8, BnbNf4
from pixtral_quant.schemes.bnb import BnbInt8Handler, BnbNf4Handler
from pixtral_quant.validate.metrics import sqnr_db

bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes is in the 'bnb' extra (installed by dev)")


def weight():
    return (torch.randn(64, 256, generator=torch.Generator().manual_seed(0)) * 0.02).to(torch.bfloat16)


def test_int8_rows_scaled_by_absmax():
    w = weight()
    t = BnbInt8Handler(BnbInt8()).quantize("x", w, None)
    assert t["weight"].dtype == torch.int8 and t["SCB"].shape == (64,) and t["weight_format"].item() == 0
    assert torch.allclose(t["SCB"], w.float().abs().amax(1), rtol=1e-3)
    assert t["weight"].abs().amax(1).eq(127).all()
    dq = t["weight"].float() * t["SCB"][:, None] / 127
    assert sqnr_db(w.float(), dq) > 35


@pytest.mark.parametrize("double_quant", [True, False])
def test_nf4_serialized_state_dequantizes(double_quant):
    from bitsandbytes.functional import QuantState, dequantize_4bit

    w = weight()
    t = BnbNf4Handler(BnbNf4(double_quant=double_quant)).quantize("x", w, None)
    assert t["weight"].dtype == torch.uint8 and t["weight"].shape == (64 * 256 // 2, 1)
    assert ("weight.nested_absmax" in t) == double_quant
    state = QuantState.from_dict({k[len("weight."):]: v for k, v in t.items() if k != "weight"}, device="cpu")
    assert state.blocksize == 64 and state.quant_type == "nf4" and tuple(state.shape) == (64, 256)
    dq = dequantize_4bit(t["weight"], state)
    assert 15 < sqnr_db(w.float(), dq.float()) < 35  # 4-bit: clearly lossy, clearly not broken


def test_nf4_state_has_one_length_per_shape_and_reads_back_the_same_offset():
    """bitsandbytes' json.dumps gives nested_offset its shortest repr (a length that varies with the data);
    the handler writes it fixed-width, so the quant_state's length (the plan's, memory.storage) depends on the
    shape alone, and bitsandbytes reads back the very offset it computed."""
    from bitsandbytes.functional import QuantState, quantize_4bit

    from pixtral_quant.memory.storage import Format, nf4_state_json

    handler, lengths = BnbNf4Handler(BnbNf4()), set()
    for scale in (1e-3, 0.02, 0.3, 7.0):
        w = (weight().float() * scale).to(torch.bfloat16)
        t = handler.quantize("x", w, None)
        lengths.add(t["weight.quant_state.bitsandbytes__nf4"].numel())
        state = QuantState.from_dict({k[len("weight."):]: v for k, v in t.items() if k != "weight"}, device="cpu")
        _, reference = quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
        assert state.offset.item() == reference.offset.item()
    fmt = Format("bnb-nf4", blocksize=64, double_quant=True, compute_dtype="bfloat16")
    assert lengths == {len(nf4_state_json(fmt, 256, 64))}
