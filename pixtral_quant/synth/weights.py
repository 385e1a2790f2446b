"""Random weights at real shapes: each tensor from its own generator (seed + name), so any tensor can be made
alone, in any order, on any device, and the same inputs give the same file bytes (per device type).

Values: Linear and embedding weights N(0, 0.02²) (the Mistral/Pixtral initializer_range), norm weights 1,
biases 0. Outliers (optional): in each decoder Linear `count` input columns get a 20–100× scale (chosen per
Linear), like the few massive channels of real LLMs, so group-wise quantizers meet groups whose range one
column dominates.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from ..loading.names import LAYERS

STD = 0.02
OUTLIER_SCALE = (20.0, 100.0)
# Runtime-name suffix → how the tensor is filled (first match wins; anything else is N(0, STD²)).
FILLS: tuple[tuple[str, str], ...] = (("norm.weight", "ones"), ("layernorm.weight", "ones"), ("ln_pre.weight", "ones"),
                                      (".bias", "zeros"))


@dataclass(frozen=True)
class Outliers:
    """count input columns per decoder Linear scaled by a factor drawn from OUTLIER_SCALE."""

    count: int = 4


def seed_of(seed: int, name: str) -> int:
    """A 63-bit seed for one tensor from the run's seed and the tensor's runtime name."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") >> 1


def fill_of(name: str) -> str:
    return next((fill for suffix, fill in FILLS if name.endswith(suffix)), "normal")


def make_tensor(name: str, shape: tuple[int, ...], dtype: torch.dtype, seed: int, device: str = "cpu",
                outliers: Outliers | None = None) -> torch.Tensor:
    """The tensor `name` (runtime name) of `shape`, in `dtype`, made on `device`."""
    fill = fill_of(name)
    if fill != "normal":
        return (torch.ones if fill == "ones" else torch.zeros)(shape, dtype=dtype, device=device)
    gen = torch.Generator(device=device).manual_seed(seed_of(seed, name))
    t = torch.empty(shape, dtype=torch.float32, device=device).normal_(0.0, STD, generator=gen)
    if outliers is not None and outliers.count and is_decoder_linear(name):
        plant_outliers(t, outliers.count, gen)
    return t.to(dtype)


def is_decoder_linear(name: str) -> bool:
    return name.startswith(LAYERS) and name.endswith("_proj.weight")


def plant_outliers(w: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
    """Scale `count` input columns of w [out, in] (float32, in place) by factors in OUTLIER_SCALE; returns w."""
    cols = torch.randperm(w.shape[1], generator=gen, device=w.device)[:count]
    low, high = OUTLIER_SCALE
    factors = low + (high - low) * torch.rand(count, generator=gen, device=w.device)
    w[:, cols] *= factors
    return w
