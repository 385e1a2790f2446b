"""gptq-mixed: GPTQModel's solver at every candidate setting of each Linear (mixed/sensitivity.py), the
allocation under the budget (mixed/allocate.py) and a compressed-tensors checkpoint (export/mixed.py, the
exporter this handler names)."""

from __future__ import annotations

from ..errors import require
from .gptq import EXTRA


class GptqMixedHandler:
    """Handler for config.GptqMixed."""

    extra = EXTRA
    needs_calibration = True
    exporter = "mixed"
    group_size = None  # one per candidate: make_plan checks each (export/mixed.py)

    def __init__(self, config):
        self.config = config
        self.name = config.name

    def require(self) -> None:
        require("gptqmodel", EXTRA)
        require("compressed_tensors", EXTRA)
        require("scipy.optimize", EXTRA)

    def solver(self, linear):
        from ..mixed.sensitivity import MixedSolver

        return MixedSolver(linear, self.config)
