"""The runtime pieces every exporter shares (convert.EXPORTERS): the progress sink, the result, the compute device,
freed heap pages back to the OS, the calibration set and the resume journal of a conversion."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..export.journal import Journal
from .reporter import Reporter  # noqa: F401  (re-exported: the exporters and validate take it from here)

if TYPE_CHECKING:
    from ..capture import CaptureStats
    from ..plan import Plan


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None (looked up once: find_library runs `ldconfig -p`)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    return getattr(libc, "malloc_trim", None)


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc's malloc_trim; a no-op elsewhere). Why: glibc raises its mmap
    threshold after large frees, so a layer's tensors land on the brk heap and their freed pages stay resident;
    without this, peak RSS grew with depth (2 vs 8 layers: +30 %) although live memory did not."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@dataclass
class ConvertResult:
    out: Path
    plan: Plan
    layer_loss: dict[str, float] = field(default_factory=dict)
    bytes_before: int = 0
    bytes_after: int = 0
    seconds: float = 0.0
    stats: CaptureStats | None = None
    calibration_hash: str | None = None
    spilled: int = 0
    recipe: object = None  # the config.Recipe that ran (convert.py sets it)


def compute_setup() -> tuple[torch.device, torch.dtype]:
    """cuda + bf16 when a GPU is there; else cpu + float32 (bf16 matmuls are slow on most CPUs; the weights
    keep their bf16 values either way)."""
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16
    return torch.device("cpu"), torch.float32


def calibration_set(calib, ckpt):
    """The recipe's calibration set (config.Calibration `calib`) tokenized for `ckpt` (calibration/dataset.py)."""
    from ..calibration.dataset import load_set

    return load_set(calib.set, ckpt.tokenizer, num_samples=calib.num_samples, seed=calib.seed,
                    max_tokens=calib.max_tokens)


def calib_budget(recipe) -> float:
    """GiB of activations kept in CPU memory before spilling to disk."""
    return recipe.calibration.activation_budget_gib


def open_journal(tmp: Path, ckpt, recipe, cset, resume: bool) -> Journal:
    """The resume journal of this conversion: what identifies it is the recipe, the source files and the
    calibration content."""
    fingerprint = {"recipe": recipe.to_dict(), "model": str(ckpt.source),
                   "weight_files": [[f.name, f.stat().st_size] for f in ckpt.weight_files],
                   "calibration": cset.content_hash if cset is not None else None}
    return Journal.reopen(tmp, fingerprint) if resume else Journal.start(tmp, fingerprint)
