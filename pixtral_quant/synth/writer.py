"""A streaming safetensors writer: the header is computed from (name, dtype, shape) up front, then each tensor
is produced, written and dropped, so memory holds one tensor at a time whatever the file size.

File layout (the safetensors format): 8-byte little-endian header length, header JSON
{"__metadata__": {"format": "pt"}, name: {"dtype", "shape", "data_offsets": [start, end]}, ...} padded with
spaces to a multiple of 8, then the tensors' bytes back to back in header order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..memory.checkpoint import safetensors_header, split_shards
from ..memory.storage import DTYPE_BYTES


@dataclass(frozen=True)
class Spec:
    """A tensor to write: name as stored, torch dtype name, shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_BYTES[self.dtype]


def plan_shards(specs: Iterable[Spec], max_shard_bytes: int | None) -> list[list[Spec]]:
    """Consecutive groups of specs, a new group started before one would pass max_shard_bytes (None: one)."""
    return split_shards(list(specs), max_shard_bytes)


def header(specs: list[Spec]) -> bytes:
    """The 8-byte length + padded JSON header of a file holding `specs` in this order."""
    return safetensors_header([(s.name, s.dtype, s.shape) for s in specs])


def write_file(path: Path, specs: list[Spec], make: Callable[[Spec], torch.Tensor]) -> int:
    """Write one safetensors file, calling make(spec) for each tensor in turn; returns the file's bytes.
    ValueError when make() returns a tensor of another dtype or shape than its spec."""
    with path.open("wb") as f:
        f.write(header(specs))
        for spec in specs:
            t = make(spec)
            if str(t.dtype).removeprefix("torch.") != spec.dtype or tuple(t.shape) != spec.shape:
                raise ValueError(f"{spec.name}: made {t.dtype} {tuple(t.shape)}, expected {spec.dtype} {spec.shape}")
            f.write(t.detach().cpu().contiguous().view(torch.uint8).numpy().data)
            del t
    return path.stat().st_size
