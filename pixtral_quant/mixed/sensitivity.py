"""Sensitivity, measured: each Linear solved by GPTQ at every candidate setting, all from one Hessian.

What the sensitivity is: GPTQModel's loss of the Linear at a setting, Σ_j (w_j − q_j)² / [H⁻¹]_jj / 2 over its
weights divided by the calibration tokens, with H = 2·XᵀX of the Linear's inputs X on the calibration set
(images in, through the full multimodal model). It is the Optimal-Brain-Surgeon estimate of how much the
squared error of the Linear's output grows, per token, once its weights are quantized at that setting (after
GPTQ's own error feedback); 0 for bf16. Why it predicts output error: the model's output moves by the sum of
the Linears' output errors propagated forward, and for small, independent errors the final loss grows by a
sum of their squared magnitudes — so the summed GPTQ loss is the additive objective the knapsack minimises
(tests/test_mixed.py checks its ranking against the measured KL of quantizing one Linear alone).

One Hessian per Linear: the inputs run through the model once; each candidate is a GPTQModel task that
adopts a private copy of it (GPTQ.adopt_hessian_from), so four settings cost four solves, not four passes.
The Linear keeps its bf16 weight for the rest of the calibration (the allocation is global and not known yet),
so every layer is calibrated on the reference model's activations, as llama-imatrix does.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..config import BF16, GptqInt4, GptqInt8, parse_setting
from ..export import compressed
from ..schemes.gptq import GptqSolver, one_thread_on_cpu

TAG = "@"  # journal tensor names: f"{suffix}{TAG}{setting}" (every candidate is kept until the allocation)


def setting_config(config, label: str):
    """The uniform GPTQ config of `label` with the mixed config's solver fields."""
    bits, group = parse_setting(label)
    solver_fields = {k: getattr(config, k) for k in ("sym", "desc_act", "act_group_aware", "damp_percent",
                                                     "block_size", "true_sequential")}
    return replace({4: GptqInt4, 8: GptqInt8}[bits](), bits=bits, group_size=group, **solver_fields)


ROWERR = "rowerr"  # per-row output error of a candidate, kept beside its tensors until the sensitivity is known


def row_errors(weight: torch.Tensor, dequantized: torch.Tensor, hessian: torch.Tensor) -> torch.Tensor:
    """Mean squared output error per token of each output row: eᵢ·H·eᵢᵀ / 2 with e = weight − dequantized
    (float [out, in]) and GPTQModel's H = (2/N)·Σₜ xₜxₜᵀ (float [in, in]) → float32 [out]."""
    e = weight.float() - dequantized.float()
    return ((e @ hessian.float()) * e).sum(1) / 2


def scales_in(quantizer, dtype: torch.dtype) -> None:
    """Make a GPTQModel quantizer round every scale it finds to `dtype` (kept in its own float type). Why: the
    loaders hold pack-quantized scales in the model dtype (bf16: 8 significant bits), and a scale error is shared by
    every weight of its group; with the rounded scale GPTQ chooses its integers — and feeds their error forward —
    against the scale that will run (on the tiny model, INT8: KL 1.8e-5 with scales rounded after the solve,
    9e-7 with fp16 scales; reports/mixed-tiny.md). Hooks `find_params`, which every GPTQModel 7.6 path
    (per group, static groups excepted) calls before it reads `quantizer.scale`."""
    find = quantizer.find_params

    def find_params(x, weight=False):
        find(x, weight=weight)
        quantizer.scale = quantizer.scale.to(dtype).to(quantizer.scale.dtype)

    quantizer.find_params = find_params


def weighted_loss(fisher: torch.Tensor, rowerr: torch.Tensor) -> float:
    """The sensitivity: ½ Σ_c F_c · δ_c², the second-order growth of KL(ref‖cand) from an output error with
    per-channel mean square rowerr [out] on channels of Fisher information fisher [out] (mixed/fisher.py)."""
    return 0.5 * float((fisher.float() * rowerr.float()).sum())


class MixedSolver:
    """One Linear's candidates: add_batch(x) with its inputs, then finish() → (tensors of every candidate named
    f"{suffix}@{setting}" plus f"rowerr@{setting}" (float32 [out], row_errors), {setting: GPTQModel's loss}, the
    unchanged weight float32 [out, in])."""

    def __init__(self, linear: torch.nn.Linear, config):
        self.linear, self.config = linear, config
        self.labels = [c for c in config.candidates if c != BF16]
        self.leader = GptqSolver(linear, setting_config(config, self.labels[0]))
        self.restore: dict[str, torch.Tensor] = {}

    def add_batch(self, x: torch.Tensor) -> None:
        """x: the Linear's input for one sample, [1, T, in] (any float dtype)."""
        self.leader.add_batch(x)

    def finish(self) -> tuple[dict[str, torch.Tensor], dict[str, float], torch.Tensor]:
        tensors, losses = {}, {}
        bias = None if self.linear.bias is None else self.linear.bias.detach().cpu()
        weight = self.linear.weight.detach().float()
        self.leader.task.materialize_global_hessian()
        hessian = self.leader.task.H
        for label in self.labels:
            solver = GptqSolver(self.linear, setting_config(self.config, label))
            solver.task.adopt_hessian_from(self.leader.task)
            scales_in(solver.task.quantizer, compressed.SCALE_DTYPE)
            qt, losses[label], _ = solver.solve()
            tensors.update((f"{k}{TAG}{label}", v) for k, v in compressed.to_compressed(qt, bias).items())
            stored = compressed.dequantized(qt).float().to(weight.device)  # what the loaders compute
            with one_thread_on_cpu(weight.device):  # a reduction over `in`: the same float sums on any CPU count
                tensors[f"{ROWERR}{TAG}{label}"] = row_errors(weight, stored, hessian).cpu()
        self.leader.task.free()
        return tensors, losses, weight

    def adopt(self, leader: "MixedSolver") -> None:
        """Solve with a private copy of `leader`'s Hessian, as row blocks of one Linear do: they see the same
        inputs (GptqSolver.adopt; capture.calibrate_head with `rows`)."""
        self.leader.adopt(leader.leader)

    @staticmethod
    def join(parts: list[tuple[dict[str, torch.Tensor], dict[str, float]]]
             ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """(tensors, {setting: loss}) of consecutive row blocks of one Linear → the Linear's, as `finish` would
        give them for all rows: each candidate's compressed tensors joined along the rows
        (compressed.concat_compressed), its row errors [out] concatenated, the losses summed per setting
        (GptqSolver.join)."""
        labels = list(parts[0][1])
        tensors = {}
        for label in labels:
            blocks = [_candidate(t, label) for t, _ in parts]
            rowerr = torch.cat([b.pop(ROWERR) for b in blocks])
            tensors.update((f"{k}{TAG}{label}", v) for k, v in compressed.concat_compressed(blocks).items())
            tensors[f"{ROWERR}{TAG}{label}"] = rowerr
        return tensors, {label: sum(losses[label] for _, losses in parts) for label in labels}


def _candidate(tensors: dict[str, torch.Tensor], label: str) -> dict[str, torch.Tensor]:
    """The tensors of one candidate `label` in a MixedSolver result, their names without the tag, in order."""
    out = {}
    for key, value in tensors.items():
        base, _, tagged = key.partition(TAG)
        if tagged == label:
            out[base] = value
    return out
