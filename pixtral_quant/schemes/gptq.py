"""gptq-int4 / gptq-int8: GPTQModel's GPTQ solver (gptqmodel.quantization.gptq.GPTQ) under our own capture
loop (capture.py feeds it each Linear's inputs, layer by layer). We do not re-derive the GPTQ math: the
Hessian accumulation, dampening, Cholesky inverse, act-order / group-aware ordering and the column-by-column
error feedback are GPTQModel's. What is ours: turning its result (dequantized weight, scales, zeros, g_idx)
into GPTQ v1 tensors (intquant.from_dequantized + to_gptq_v1, tested equal to GPTQModel's packer).
"""

from __future__ import annotations

import contextlib

import torch

from ..errors import require
from . import intquant
from .gptq_format import gptq_quantization_config

EXTRA = "gptq"


def group_aware(config) -> bool:
    """GPTQModel's group-aware reordering applies to grouped, non-act-order runs only."""
    return config.act_group_aware and not config.desc_act and config.group_size > 0


@contextlib.contextmanager
def one_thread_on_cpu(device: torch.device):
    """Run the block with one torch thread when it computes on the CPU. Why: GPTQ's solve factors the Hessian
    (Cholesky, its inverse: LAPACK), whose float results depend on the thread count even in MKL's strict
    reproducible mode, which covers GEMM only (reproducible.py; measured on AMD EPYC at 512-5120 columns); with one
    thread the checkpoint is the same bytes with any thread count (tests/test_determinism.py). The Hessian's
    accumulation, a GEMM, runs on every thread. CUDA is unaffected."""
    if torch.device(device).type != "cpu" or torch.get_num_threads() == 1:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class GptqSolver:
    """One Linear's GPTQ task: add_batch(x) with its inputs (float [..., in]), then finish()."""

    def __init__(self, linear: torch.nn.Linear, config):
        gptq_mod = require("gptqmodel.quantization.gptq", EXTRA)
        QuantizeConfig = require("gptqmodel", EXTRA).QuantizeConfig
        # A float32 view of the weight so the dequantized result is not rounded to bf16 before we read the
        # integers back out of it.
        work = torch.nn.Linear(linear.in_features, linear.out_features, bias=False, device=linear.weight.device)
        work.weight.data = linear.weight.detach().float().clone()
        # fallback=None: never fall back to RTN silently; offload_to_disk=False: we manage our own memory.
        qcfg = QuantizeConfig(bits=config.bits, group_size=config.group_size, sym=config.sym,
                              desc_act=config.desc_act, act_group_aware=group_aware(config),
                              damp_percent=config.damp_percent, fallback=None, offload_to_disk=False)
        self.task = gptq_mod.GPTQ(work, qcfg)
        self.task.quantizer.configure(perchannel=True)
        self.config = config
        self.bias = None if linear.bias is None else linear.bias.detach()

    def add_batch(self, x: torch.Tensor) -> None:
        """x: the Linear's input for one sample, [1, T, in] (any float dtype). Every thread: the update is Xᵀ·X,
        a GEMM, which MKL's strict reproducible mode computes the same with any thread count (reproducible.py)."""
        self.task.add_batch(x.detach(), None)

    def solve(self) -> tuple[intquant.IntQuantized, float, torch.Tensor]:
        """(the integers, GPTQModel's average loss, dequantized weight float32 [out, in]). The loss is
        GPTQModel's Σ (w − q)² / [H⁻¹]_jj / 2 over the weights, divided by the calibration tokens: the increase of
        this Linear's squared output error per token that the quantization causes (the OBS estimate)."""
        with one_thread_on_cpu(self.task.module.weight.device):
            q, scale, zero, g_idx, _, avg_loss, _, _ = self.task.quantize(blocksize=self.config.block_size)
        q, scale, zero, g_idx = (t.detach().cpu() for t in (q, scale, zero, g_idx))
        qt = intquant.from_dequantized(q.float(), scale, zero, g_idx, self.config.bits)
        self.task.free()
        return qt, float(avg_loss), q.float()

    def adopt(self, leader: "GptqSolver") -> None:
        """Solve with a private copy of `leader`'s Hessian (GPTQModel's GPTQ.adopt_hessian_from), as row blocks
        of one Linear do: they see the same inputs."""
        self.task.adopt_hessian_from(leader.task)

    @staticmethod
    def join(parts: list[tuple[dict[str, torch.Tensor], float]]) -> tuple[dict[str, torch.Tensor], float]:
        """(v1 tensors, loss) of consecutive row blocks of one Linear → the Linear's: the tensors concatenated
        along the rows, the losses summed (GPTQModel's is Σ over the weights / the samples)."""
        return intquant.concat_gptq_v1([t for t, _ in parts]), sum(loss for _, loss in parts)

    def finish(self) -> tuple[dict[str, torch.Tensor], float, torch.Tensor]:
        """(GPTQ v1 tensors, GPTQModel's average loss, dequantized weight float32 [out, in]). Afterwards
        `self.restore` holds the float32 scale and zero [out, groups]: with the v1 tensors they give back the
        dequantized weight bit for bit (`restore_weight`), which a resumed conversion needs."""
        qt, loss, dequantized = self.solve()
        self.restore = {"scale": qt.scale, "zero": qt.zero}
        bias = None if self.bias is None else self.bias.cpu()
        return intquant.to_gptq_v1(qt, bias), loss, dequantized


class GptqHandler:
    """Handler for GptqInt4 / GptqInt8 configs."""

    extra = EXTRA
    needs_calibration = True
    exporter = "checkpoint"

    def __init__(self, config):
        self.config = config
        self.name = config.name
        self.group_size = config.group_size

    def require(self) -> None:
        require("gptqmodel", EXTRA)

    def solver(self, linear: torch.nn.Linear) -> GptqSolver:
        return GptqSolver(linear, self.config)

    def restore_weight(self, tensors: dict[str, torch.Tensor], restore: dict[str, torch.Tensor]) -> torch.Tensor:
        """The solver's dequantized weight (float32 [out, in]) from its v1 tensors and `GptqSolver.restore`."""
        return intquant.restore_weight(tensors, restore["scale"], restore["zero"], self.config.bits)

    def quantization_config(self, plan) -> dict:
        c = self.config
        return gptq_quantization_config(c.bits, c.group_size, c.sym, c.desc_act, plan,
                                        {"damp_percent": c.damp_percent, "act_group_aware": group_aware(c)})
