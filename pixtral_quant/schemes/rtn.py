"""rtn-int4 / rtn-int8: round-to-nearest in groups, stored in the GPTQ v1 format (data-free baseline).
The math is intquant.rtn (GPTQModel's quantizer conventions); this module is the handler."""

from __future__ import annotations

import torch

from . import intquant
from .gptq_format import gptq_quantization_config


class RtnHandler:
    """Handler for RtnInt4 / RtnInt8 configs."""

    extra = None
    needs_calibration = False
    exporter = "checkpoint"

    def __init__(self, config):
        self.config = config
        self.name = config.name
        self.group_size = config.group_size

    def require(self) -> None:
        """Nothing to import: the math is ours."""

    def quantize(self, name: str, weight: torch.Tensor, bias: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """weight [out, in] (any float dtype) → GPTQ v1 tensors (qweight, qzeros, scales, g_idx[, bias])."""
        c = self.config
        return intquant.to_gptq_v1(intquant.rtn(weight, c.bits, c.group_size, c.sym), bias)

    def quantization_config(self, plan) -> dict:
        c = self.config
        return gptq_quantization_config(c.bits, c.group_size, c.sym, False, plan, {"damp_percent": 0.01})
