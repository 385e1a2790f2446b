"""Integer weight quantization math shared by the GPTQ-format schemes (rtn-*, gptq-*): group scales and zero
points, quantize / dequantize, and GPTQ v1 packing. Pure tensor functions, no model code.

Conventions are GPTQModel's (quantization/quantizer.py `Quantizer.find_params` with perchannel=True and
nn_modules/qlinear `pack_original`), so a weight rounded here and one GPTQModel quantizes with an identity
Hessian agree bit for bit (tests/test_schemes_intquant.py checks it against the installed GPTQModel):

- symmetric: scale = 2·max|w| / (2^bits − 1), zero = 2^(bits−1); q = clamp(round(w / scale) + zero, 0, 2^bits − 1)
- asymmetric: scale = (max(w, 0) − min(w, 0)) / (2^bits − 1), zero = round(−min / scale)
- a group whose weights are all zero gets the range [−1, 1] (no division by zero)
- GPTQ v1 on disk: qweight int32 [in·bits/32, out] (packed along in, lowest bits first), qzeros int32
  [groups, out·bits/32] holding zero − 1, scales float16 [groups, out], g_idx int32 [in].

Why our own code and not GPTQModel's: the rtn-* schemes are data-free and must run (and export) without the
`gptq` extra, and GPTQModel's packer writes its internal v2 zeros that it converts to v1 only when saving a
whole model. The GPTQ solver itself is GPTQModel's (schemes/gptq.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PACK_BITS = 32  # GPTQ packs into int32 words


@dataclass(frozen=True)
class IntQuantized:
    """One Linear quantized to integers. q: int32 [out, in] in [0, 2^bits − 1]; scale, zero: float32
    [out, groups]; g_idx: int32 [in] (group of each input column); bits."""

    q: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    g_idx: torch.Tensor
    bits: int

    def dequantize(self) -> torch.Tensor:
        """float32 [out, in]: scale[g] · (q − zero[g]) per column."""
        g = self.g_idx.long()
        return self.scale[:, g] * (self.q.float() - self.zero[:, g])


def group_params(w: torch.Tensor, bits: int, sym: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero per row of w (float32 [rows, cols]) → (scale [rows], zero [rows]), float32."""
    maxq = 2**bits - 1
    zeros = torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    xmin = torch.minimum(w.min(1).values, zeros)
    xmax = torch.maximum(w.max(1).values, zeros)
    if sym:
        xmax = torch.maximum(xmin.abs(), xmax)
        xmin = torch.where(xmin < 0, -xmax, xmin)
    empty = (xmin == 0) & (xmax == 0)
    xmin = torch.where(empty, -torch.ones_like(xmin), xmin)
    xmax = torch.where(empty, torch.ones_like(xmax), xmax)
    scale = (xmax - xmin) / maxq
    zero = torch.full_like(scale, (maxq + 1) / 2) if sym else torch.round(-xmin / scale)
    return scale, zero


def n_groups(in_features: int, group_size: int) -> int:
    return 1 if group_size == -1 else in_features // group_size


def check_group_size(in_features: int, group_size: int, where: str = "") -> None:
    """ValueError unless group_size is -1 (per channel) or divides in_features."""
    if group_size != -1 and (group_size <= 0 or in_features % group_size):
        raise ValueError(f"{where}group size {group_size} does not divide in_features {in_features}")


def rtn(w: torch.Tensor, bits: int, group_size: int, sym: bool) -> IntQuantized:
    """Round-to-nearest of a weight (any float dtype [out, in]) in groups of `group_size` input columns
    (-1: one group per output channel)."""
    w = w.float()
    out_f, in_f = w.shape
    check_group_size(in_f, group_size)
    size = in_f if group_size == -1 else group_size
    groups = w.reshape(out_f, in_f // size, size)
    scale, zero = group_params(groups.reshape(-1, size), bits, sym)
    scale, zero = scale.reshape(out_f, -1), zero.reshape(out_f, -1)
    q = torch.clamp(torch.round(groups / scale[..., None]) + zero[..., None], 0, 2**bits - 1)
    g_idx = torch.arange(in_f, dtype=torch.int32) // size
    return IntQuantized(q.reshape(out_f, in_f).to(torch.int32), scale, zero, g_idx, bits)


def from_dequantized(dq: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, g_idx: torch.Tensor,
                     bits: int) -> IntQuantized:
    """The integers behind a dequantized weight (what a GPTQ solver returns: float [out, in] equal to
    scale[g]·(q − zero[g])), recovered as GPTQModel's packer does: round(dq / scale + zero), clamped."""
    g = g_idx.long()
    scale, zero = scale.float(), zero.float()
    q = torch.round(dq.float() / scale[:, g] + zero[:, g]).clamp(0, 2**bits - 1).to(torch.int32)
    return IntQuantized(q, scale, zero, g_idx.to(torch.int32), bits)


def pack_rows(values: torch.Tensor, bits: int) -> torch.Tensor:
    """int tensor [n, m] with values < 2^bits → int32 [n·bits/32, m], element j of each run of 32/bits rows
    in bits j·bits … (j+1)·bits − 1 (lowest first)."""
    per = PACK_BITS // bits
    if values.shape[0] % per:
        raise ValueError(f"{values.shape[0]} rows do not pack into int32 words of {per} values")
    v = values.to(torch.int64).reshape(-1, per, values.shape[1])
    shifts = (torch.arange(per, dtype=torch.int64) * bits).view(1, per, 1)
    words = (v << shifts).sum(1)  # disjoint bit ranges: the sum is the bitwise or
    return (words - ((words >> 31) << 32)).to(torch.int32)  # reinterpret uint32 as int32


def unpack_rows(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse of pack_rows: int32 [n, m] → int32 [n·32/bits, m]."""
    per = PACK_BITS // bits
    words = packed.to(torch.int64) & 0xFFFFFFFF
    shifts = (torch.arange(per, dtype=torch.int64) * bits).view(1, per, 1)
    values = (words.unsqueeze(1) >> shifts) & (2**bits - 1)
    return values.reshape(-1, packed.shape[1]).to(torch.int32)


def to_gptq_v1(qt: IntQuantized, bias: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """GPTQ v1 tensors of one Linear: qweight, qzeros (zero − 1), scales (float16), g_idx (+ bias, float16)."""
    zeros_v1 = (qt.zero.round().to(torch.int64) - 1).clamp(min=0)  # v1 stores zero − 1 (a sym zero is ≥ 2)
    out = {
        "qweight": pack_rows(qt.q.T.contiguous(), qt.bits),
        "qzeros": pack_rows(zeros_v1, qt.bits).T.contiguous(),  # zeros_v1 [out, groups] packed along out
        "scales": qt.scale.T.contiguous().to(torch.float16),
        "g_idx": qt.g_idx.to(torch.int32).contiguous(),
    }
    if bias is not None:
        out["bias"] = bias.to(torch.float16).contiguous()
    return out


# Axis of each GPTQ v1 tensor along which the output rows run (g_idx is per input column: the same for every row).
OUT_AXIS = {"qweight": 1, "qzeros": 1, "scales": 1, "bias": 0}


def concat_gptq_v1(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """GPTQ v1 tensors of consecutive row blocks of one Linear (to_gptq_v1 of rows [0, r1), [r1, r2) ...; every
    block but the last a multiple of 32 rows, so qzeros' packing along the rows does not straddle blocks) → the
    whole Linear's, equal to to_gptq_v1 of all rows at once."""
    out = {k: torch.cat([p[k] for p in parts], dim=axis) for k, axis in OUT_AXIS.items() if k in parts[0]}
    out["g_idx"] = parts[0]["g_idx"]
    return {k: out[k] for k in parts[0]}


def from_gptq_v1(tensors: dict[str, torch.Tensor], bits: int) -> IntQuantized:
    """Read GPTQ v1 tensors back (scales as stored, float16 → float32)."""
    q = unpack_rows(tensors["qweight"], bits).T.contiguous()
    zero = unpack_rows(tensors["qzeros"].T.contiguous(), bits).float() + 1  # [out, groups]
    return IntQuantized(q, tensors["scales"].float().T.contiguous(), zero, tensors["g_idx"], bits)


def restore_weight(tensors: dict[str, torch.Tensor], scale: torch.Tensor, zero: torch.Tensor,
                   bits: int) -> torch.Tensor:
    """float32 [out, in] from GPTQ v1 `tensors` (qweight, g_idx) with exact float32 scale and zero [out, groups]:
    equal bit for bit to the dequantized weight they were derived from (the stored float16 scales are not)."""
    q = unpack_rows(tensors["qweight"], bits).T.contiguous()
    return IntQuantized(q, scale.float(), zero.float(), tensors["g_idx"], bits).dequantize()
