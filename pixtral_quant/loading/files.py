"""Reading the files of a model directory: safetensors headers (validated, no data read), tensors streamed
one at a time, and JSON configs.

A safetensors file is an 8-byte little-endian header length, a JSON header {name: {dtype, shape,
data_offsets: [start, end]}}, then the data. Checking every `end` against the file size catches a
truncated download before any tensor is read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InputError

# safetensors dtype codes → torch dtype names (reported by inspect; bytes come from the offsets).
DTYPE_NAMES = {
    "BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "I8": "int8", "U8": "uint8", "I16": "int16", "U16": "uint16", "I32": "int32", "U32": "uint32",
    "I64": "int64", "U64": "uint64", "BOOL": "bool",
}
# Bytes per element of each safetensors dtype code, to check a header's offsets against its shapes.
ITEMSIZE = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8, "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "I16": 2,
            "U16": 2, "I32": 4, "U32": 4, "I64": 8, "U64": 8, "BOOL": 1}
FINITE_CHUNK = 1 << 20  # elements checked for NaN/Inf at a time. Small on purpose: with 16M-element chunks
# glibc kept the freed temporaries and convert's peak RSS rose 24 % (tests/test_memory_rss.py)
REDOWNLOAD = "the file is damaged or incomplete: download it again (and check the disk is not full)"


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the header describes it. name: as stored in `file`; dtype: torch dtype name."""

    name: str
    file: Path
    dtype: str
    shape: tuple[int, ...]
    nbytes: int

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def _damaged(path: Path, what: str) -> InputError:
    return InputError(f"not a readable safetensors file: {what}", where=path, fix=REDOWNLOAD)


def _read_raw_header(path: Path) -> tuple[dict, int]:
    """(header dict, size of the data section in bytes)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise _damaged(path, f"only {len(head)} bytes long")
            n = int.from_bytes(head, "little")
            if n > size - 8:
                raise _damaged(path, f"the header claims {n} bytes but only {size - 8} follow")
            header = json.loads(f.read(n))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _damaged(path, f"the header is not valid JSON ({exc})") from None
    except OSError as exc:
        raise InputError(f"cannot read the file ({exc.strerror or exc})", where=path,
                         fix="check the path and its permissions") from None
    if not isinstance(header, dict):
        raise _damaged(path, "the header is not a JSON object")
    return header, size - 8 - n


def read_header(path: Path) -> dict[str, TensorInfo]:
    """name → TensorInfo for every tensor of `path`; InputError (re-download) when any tensor's data
    would lie past the end of the file or the header is malformed."""
    header, data_size = _read_raw_header(path)
    infos = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            start, end = (int(x) for x in entry["data_offsets"])
            shape = tuple(int(d) for d in entry["shape"])
            dtype = DTYPE_NAMES.get(entry["dtype"], str(entry["dtype"]).lower())
        except (KeyError, TypeError, ValueError):
            raise _damaged(path, f"the header entry of {name!r} is malformed") from None
        if end > data_size or start > end:
            raise _damaged(path, f"tensor {name!r} ends at byte {end} but the data section has {data_size} "
                                 "bytes (truncated)")
        info = TensorInfo(name, path, dtype, shape, end - start)
        itemsize = ITEMSIZE.get(entry["dtype"])
        if itemsize is not None and info.numel * itemsize != info.nbytes:
            raise _damaged(path, f"tensor {name!r} is {entry['dtype']} {list(shape)} ({info.numel * itemsize} bytes) "
                                 f"but its offsets span {info.nbytes} bytes")
        infos[name] = info
    return infos


def stream_tensors(path: Path, names: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, tensor) for `names` of `path`, one tensor in memory at a time. Tensors keep their stored
    dtype and shape; safetensors errors become InputError naming the file.

    safetensors validates the file; the bytes are then read with plain file reads into tensors that own their
    memory. (safetensors' get_tensor returns views into a private mapping of the whole file: one view kept alive
    — a norm weight waiting in an output shard — pinned the mapping and every page read through it, so resident
    memory grew with every layer read; see reports/rss-vs-depth.md.) The validation opens it with the numpy
    framework: a read-only shared mapping. The "pt" framework maps the file copy-on-write (MAP_PRIVATE), which the
    kernel's overcommit heuristic refuses for a file larger than RAM + swap (ENOMEM): Pixtral-12B's native
    consolidated.safetensors is 25.4 GB, more than this 24 GiB machine has (found by scripts/full_size_cpu.py)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy"):  # validates the layout; its mapping is never touched
            header, data_size = _read_raw_header(path)
            data_start = path.stat().st_size - data_size
            with path.open("rb") as fh:
                for name in names:
                    yield name, _read_tensor(fh, path, name, header, data_start)
    except SafetensorError as exc:
        raise _damaged(path, str(exc)) from None


def _read_tensor(fh, path: Path, name: str, header: dict, data_start: int) -> torch.Tensor:
    """One tensor read from an open safetensors file into its own memory."""
    if name not in header:
        raise _damaged(path, f"no tensor named {name!r}")
    entry = header[name]
    start, end = (int(x) for x in entry["data_offsets"])
    tensor = torch.empty(tuple(entry["shape"]), dtype=getattr(torch, DTYPE_NAMES[entry["dtype"]]))
    if end > start:
        fh.seek(data_start + start)
        if fh.readinto(tensor.reshape(-1).view(torch.uint8).numpy()) != end - start:
            raise _damaged(path, f"tensor {name!r} is cut short")
    bad = count_non_finite(tensor)
    if bad:
        raise _damaged(path, f"tensor {name!r} holds {bad} non-finite values (NaN/Inf) of {tensor.numel()}")
    return tensor


def count_non_finite(tensor: torch.Tensor) -> int:
    """NaN/±Inf elements of a floating tensor (0 for integer tensors), counted in chunks so the mask stays
    small. Why: a trained checkpoint never holds them; a damaged copy does, and quantizing it would write
    NaN scales without any error."""
    if not tensor.is_floating_point():
        return 0
    flat = tensor.reshape(-1)
    return sum(int((~torch.isfinite(flat[i:i + FINITE_CHUNK])).sum()) for i in range(0, flat.numel(), FINITE_CHUNK))


def read_json(path: Path) -> dict:
    """A JSON object from `path`; InputError naming the file when it cannot be read or parsed."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot parse the JSON ({exc})", where=path,
                         fix="replace it with the original file from the model repository") from None
    if not isinstance(data, dict):
        raise InputError("the JSON is not an object", where=path, fix="replace it with the original file")
    return data
