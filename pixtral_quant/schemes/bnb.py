"""bnb-int8 (LLM.int8) and bnb-nf4: weights quantized with bitsandbytes' own functions, stored the way
transformers' bitsandbytes integration serializes them (checked by saving a model loaded with
BitsAndBytesConfig on CPU: equal tensors, see tests/test_schemes_bnb.py).

- 8-bit: `weight` int8 [out, in] + `SCB` float32 [out] (absmax per row) + `weight_format` uint8 0 ('row')
- 4-bit: `weight` uint8 [(out·in+1)//2, 1] + `weight.absmax`, `weight.quant_map`, (`weight.nested_absmax`,
  `weight.nested_quant_map`), `weight.quant_state.bitsandbytes__nf4` (QuantState.as_dict(packed=True), its
  float nested_offset written fixed-width: fixed_width_state)
"""

from __future__ import annotations

import torch

from ..errors import require
from ..memory.storage import packed_state_json

EXTRA = "bnb"


def _bnb_functional():
    require("bitsandbytes", EXTRA)
    return require("bitsandbytes.functional", EXTRA)


class BnbInt8Handler:
    """LLM.int8 weights: rows scaled by their absmax (bitsandbytes.functional.int8_vectorwise_quant)."""

    extra = EXTRA
    needs_calibration = False
    exporter = "checkpoint"
    group_size = None

    def __init__(self, config):
        self.config = config
        self.name = config.name

    def require(self) -> None:
        _bnb_functional()

    def quantize(self, name: str, weight: torch.Tensor, bias: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """weight [out, in] → int8 weight, SCB float32 [out], weight_format (+ bias as stored)."""
        F = _bnb_functional()
        q, scb, _ = F.int8_vectorwise_quant(weight.to(torch.float16))
        out = {"weight": q.contiguous(), "SCB": scb.contiguous(), "weight_format": torch.tensor(0, dtype=torch.uint8)}
        if bias is not None:
            out["bias"] = bias
        return out

    def quantization_config(self, plan) -> dict:
        return _bnb_config(plan, {"load_in_8bit": True, "llm_int8_threshold": self.config.threshold})


STATE = "weight.quant_state.bitsandbytes__nf4"


def fixed_width_state(packed: torch.Tensor) -> torch.Tensor:
    """bitsandbytes' packed quant_state JSON (uint8 [n]) → the same fields with the float nested_offset
    fixed-width (memory.storage.packed_state_json: the plan's size is then exact), uint8 [m]."""
    text = packed_state_json(_bnb_functional().unpack_tensor_to_dict(packed))
    return torch.frombuffer(bytearray(text.encode()), dtype=torch.uint8)


class BnbNf4Handler:
    """NF4 blocks (bitsandbytes.functional.quantize_4bit), optionally with double-quantized absmaxes."""

    extra = EXTRA
    needs_calibration = False
    exporter = "checkpoint"
    group_size = None

    def __init__(self, config):
        self.config = config
        self.name = config.name

    def require(self) -> None:
        _bnb_functional()

    def quantize(self, name: str, weight: torch.Tensor, bias: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """weight [out, in] (bf16) → packed uint8 weight + its serialized QuantState entries."""
        F = _bnb_functional()
        dtype = getattr(torch, self.config.compute_dtype)
        packed, state = F.quantize_4bit(weight.to(dtype), blocksize=self.config.blocksize, quant_type="nf4",
                                        compress_statistics=self.config.double_quant)
        out = {"weight": packed.contiguous()}
        out.update({f"weight.{k}": v.contiguous() for k, v in state.as_dict(packed=True).items()})
        out[STATE] = fixed_width_state(out[STATE])
        if bias is not None:
            out["bias"] = bias
        return out

    def quantization_config(self, plan) -> dict:
        c = self.config
        return _bnb_config(plan, {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                                  "bnb_4bit_use_double_quant": c.double_quant,
                                  "bnb_4bit_compute_dtype": c.compute_dtype, "bnb_4bit_quant_storage": "uint8"})


def _bnb_config(plan, settings: dict) -> dict:
    """transformers' BitsAndBytesConfig as config.json stores it; skip list = the plan's kept modules, spelled
    so they match both the runtime and the checkpoint names (a fragment, matched as a substring)."""
    base = {"quant_method": "bitsandbytes", "load_in_8bit": False, "load_in_4bit": False,
            "llm_int8_threshold": 6.0, "llm_int8_has_fp16_weight": False, "llm_int8_enable_fp32_cpu_offload": False,
            "bnb_4bit_quant_type": "fp4", "bnb_4bit_use_double_quant": False, "bnb_4bit_compute_dtype": "float32",
            "bnb_4bit_quant_storage": "uint8"}
    base.update(settings)
    base["llm_int8_skip_modules"] = plan.skip_fragments()
    return base
