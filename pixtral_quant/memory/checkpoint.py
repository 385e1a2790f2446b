"""Predicted size of the checkpoint convert writes: tensor bytes per component (exact arithmetic) plus the
safetensors headers (estimated by writing the header JSON each shard would get).

A safetensors file is an 8-byte header length, the header JSON ({"__metadata__": {"format": "pt"}, then every
tensor {"dtype", "shape", "data_offsets"} in data order, sorted by item size descending then name, compact
separators), padded with spaces to a multiple of 8, then the data. convert writes tensors in checkpoint names,
non-decoder tensors first then layer by layer, and starts a new shard before one would pass max_shard_gb.
The header estimate is exact but for the order of tensors within a shard (bnb-nf4's quant_state JSON is
fixed-width: memory.storage.packed_state_json).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..loading.names import LAYERS, runtime_to_checkpoint
from .inventory import Item, by_component
from .storage import DTYPE_BYTES

ST_CODES = {"bfloat16": "BF16", "float16": "F16", "float32": "F32", "int32": "I32", "int8": "I8", "uint8": "U8",
            "int64": "I64", "bool": "BOOL"}


@dataclass(frozen=True)
class CheckpointEstimate:
    """tensor_bytes per component (+ 'total'), header_bytes over all shards, files (shard count), total_bytes."""

    tensor_bytes: dict[str, int]
    header_bytes: int
    files: int

    @property
    def total_bytes(self) -> int:
        return self.tensor_bytes["total"] + self.header_bytes


def storage_order(name: str, dtype: str) -> tuple[int, str]:
    """Sort key of the tensors inside a safetensors file: item size descending, then name (what safetensors'
    save_file writes, and what loading.write's streaming writer reproduces)."""
    return -DTYPE_BYTES[dtype], name


def safetensors_header(entries: list[tuple[str, str, tuple[int, ...]]]) -> bytes:
    """The 8-byte length + space-padded compact JSON header of a file holding (name, dtype, shape) entries,
    their data back to back in this order."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape in entries:
        n = DTYPE_BYTES[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": ST_CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


def header_bytes(items: list[tuple[str, str, tuple[int, ...]]]) -> int:
    """Bytes before the data of one safetensors file holding (checkpoint name, dtype, shape) items."""
    return len(safetensors_header(sorted(items, key=lambda it: storage_order(it[0], it[1]))))


def split_shards(items, max_shard_bytes: int | None) -> list[list]:
    """Consecutive groups of items (anything with .nbytes), a new group started before one would pass
    max_shard_bytes (None: one group). The rule loading.write.write_shards applies while streaming."""
    out: list[list] = [[]]
    size = 0
    for it in items:
        if out[-1] and max_shard_bytes is not None and size + it.nbytes > max_shard_bytes:
            out.append([])
            size = 0
        out[-1].append(it)
        size += it.nbytes
    return out


def write_order(items: list[Item]) -> list[Item]:
    """Stored items in convert's order: non-decoder tensors, then each layer; within a group the quantized
    modules' tensors (module, suffix sorted), then the other tensors by name."""
    def group(it: Item) -> int:
        return int(it.name[len(LAYERS):].split(".", 1)[0]) + 1 if it.name.startswith(LAYERS) else 0

    def key(it: Item):
        quantized = it.fmt is not None and it.fmt.kind != "dense"
        return group(it), 0 if quantized else 1, it.name

    return sorted((it for it in items if it.stored), key=key)


def shards(items: list[Item], max_shard_bytes: int | None) -> list[list[Item]]:
    """The shards convert writes: its write order, split by split_shards."""
    return split_shards(write_order(items), max_shard_bytes)


def estimate(items: list[Item], max_shard_bytes: int | None) -> CheckpointEstimate:
    """Tensor bytes per component and header bytes of the checkpoint holding `items`."""
    per = by_component(items, stored_only=True)
    per["total"] = sum(per.values())
    parts = shards(items, max_shard_bytes)
    head = sum(header_bytes([(runtime_to_checkpoint(it.name), it.dtype, it.shape) for it in part]) for part in parts)
    return CheckpointEstimate(per, head, len(parts))
