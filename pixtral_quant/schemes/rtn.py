"""rtn-int4 / rtn-int8: round-to-nearest in groups, stored in the GPTQ v1 format (data-free baseline).
The math is intquant.rtn (GPTQModel's quantizer conventions); this module is the handler."""

from __future__ import annotations

import torch

from . import intquant
from .gptq_format import gptq_quantization_config

# Output rows quantized at once. Why: RTN's temporaries are ~24 bytes per parameter (diagnostics/conversion.py); on
# Pixtral-12B's lm_head (131072 × 5120) all at once that is 16 GB, which took convert's peak RSS to 19.8 GiB
# (reports/full-size-cpu.md). A multiple of 32 (intquant.concat_gptq_v1); rows are independent, so the result is
# the same bit for bit.
ROW_BLOCK = 8192


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
        parts = [intquant.to_gptq_v1(intquant.rtn(weight[i:i + ROW_BLOCK], c.bits, c.group_size, c.sym),
                                     None if bias is None else bias[i:i + ROW_BLOCK])
                 for i in range(0, weight.shape[0], ROW_BLOCK)]
        return parts[0] if len(parts) == 1 else intquant.concat_gptq_v1(parts)

    def quantization_config(self, plan) -> dict:
        c = self.config
        return gptq_quantization_config(c.bits, c.group_size, c.sym, False, plan, {"damp_percent": 0.01})
