"""Importance matrices for llama.cpp's quantizer: accumulation, the GGUF imatrix file, and the quantize payload.

What llama-imatrix computes (tools/imatrix/imatrix.cpp, commit 0c1e57098 via docs/notes-gguf.md), for each
weight whose matmul input is x [tokens, in]: in_sum2[j] = Σ_tokens x[:, j]², counts = tokens seen. Its file is a
GGUF with `general.type = imatrix`, `imatrix.datasets` (strings), `imatrix.chunk_count`, `imatrix.chunk_size`
(uint32) and, per weight `<name>` (the GGUF tensor name, e.g. `blk.0.attn_q.weight`), two F32 tensors:
`<name>.in_sum2` (ggml shape [in, 1]) and `<name>.counts` ([1, 1]). llama.cpp's quantizer loads it as
data[j] = in_sum2[j] / count (1.0 where count is 0: tools/quantize, "Partial imatrix data"), the array it passes
to llama_model_quantize (`llama_model_imatrix_data.data`, size = in).
Accumulation here is pure and in float64 (llama.cpp sums in float32); the file stores float32 like llama.cpp's.
The q/k row permutation does not touch input columns, so statistics need no permutation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...errors import InputError, require

SUM2, COUNTS = ".in_sum2", ".counts"
TYPE = "imatrix"  # general.type (gguf.GGUFType.IMATRIX)


@dataclass(frozen=True)
class ImatrixEntry:
    """Statistics of one weight: in_sum2 float64 [in] = Σ x² per input column; count = tokens (rows of x)."""

    in_sum2: torch.Tensor
    count: int


@dataclass(frozen=True)
class Imatrix:
    """A whole importance matrix: GGUF tensor name → entry, plus what llama-imatrix records about its data."""

    entries: Mapping[str, ImatrixEntry]
    datasets: tuple[str, ...]
    chunk_count: int
    chunk_size: int


def accumulate(entry: ImatrixEntry | None, x: torch.Tensor) -> ImatrixEntry:
    """Add one batch of a Linear's inputs. x: [..., in] any float dtype → a new entry (in_sum2 float64 [in],
    count += number of rows of x.reshape(-1, in)). entry None starts from zero."""
    rows = x.reshape(-1, x.shape[-1]).to(torch.float64)
    sum2 = rows.square().sum(dim=0)
    if entry is None:
        return ImatrixEntry(sum2, rows.shape[0])
    if entry.in_sum2.shape != sum2.shape:
        raise ValueError(f"input width {sum2.shape[0]} differs from the accumulated {entry.in_sum2.shape[0]}")
    return ImatrixEntry(entry.in_sum2 + sum2, entry.count + rows.shape[0])


def quantize_payload(entry: ImatrixEntry) -> np.ndarray:
    """The float32 [in] array llama_model_quantize takes for this weight: in_sum2 / count, ones when count is 0
    (llama.cpp's loader does the same for a weight that saw no input)."""
    if entry.count <= 0:
        return np.ones(entry.in_sum2.shape[0], dtype=np.float32)
    return (entry.in_sum2 / entry.count).to(torch.float32).numpy()


def write_imatrix(imatrix: Imatrix, path: str | Path) -> Path:
    """The GGUF imatrix file llama-imatrix writes (module docstring). Written as `<path>.partial`, then renamed.
    The writer's arch is "": GGUFWriter skips an empty general.architecture, and llama-imatrix's files have none.
    At least one dataset name is required: llama.cpp's loader reads imatrix.datasets, and GGUFWriter drops an
    empty array."""
    gguf = require("gguf", "gguf")
    path = Path(path)
    partial_path = path.with_name(path.name + ".partial")
    if not imatrix.datasets:
        raise ValueError("an imatrix needs at least one dataset name (imatrix.datasets)")
    writer = gguf.GGUFWriter(partial_path, "")
    writer.add_type(gguf.GGUFType.IMATRIX)
    writer.add_array(gguf.Keys.IMatrix.DATASETS, list(imatrix.datasets))
    writer.add_uint32(gguf.Keys.IMatrix.CHUNK_COUNT, imatrix.chunk_count)
    writer.add_uint32(gguf.Keys.IMatrix.CHUNK_SIZE, imatrix.chunk_size)
    for name, entry in sorted(imatrix.entries.items()):
        # numpy [n_mat=1, in] is ggml [in, 1]; counts [1, 1]. Held until written: a few MB even for 12B.
        writer.add_tensor(name + SUM2, entry.in_sum2.to(torch.float32).numpy().reshape(1, -1))
        writer.add_tensor(name + COUNTS, np.array([[entry.count]], dtype=np.float32))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        partial_path.replace(path)
    except BaseException:
        writer.close()
        partial_path.unlink(missing_ok=True)
        raise
    return path


def read_imatrix(path: str | Path) -> Imatrix:
    """Read a GGUF imatrix file (ours or llama-imatrix's). Entries come back with float64 in_sum2 (from the
    file's float32) and integer counts. InputError for a file that is not an imatrix or lacks a counts tensor."""
    gguf = require("gguf", "gguf")
    reader = gguf.GGUFReader(path)
    kind = reader.get_field(gguf.Keys.General.TYPE)
    if kind is None or kind.contents() != TYPE:
        raise InputError("not a GGUF importance matrix (general.type is not 'imatrix')", where=path,
                         fix="pass the .gguf file llama-imatrix or pixtral-quant wrote")
    tensors = {t.name: t.data for t in reader.tensors}
    entries = {}
    for name in (n[: -len(SUM2)] for n in tensors if n.endswith(SUM2)):
        if name + COUNTS not in tensors:
            raise InputError(f"{name}{SUM2} has no {name}{COUNTS}", where=path, fix="re-create the imatrix file")
        entries[name] = ImatrixEntry(torch.from_numpy(np.array(tensors[name + SUM2], dtype=np.float64).reshape(-1)),
                                     int(np.asarray(tensors[name + COUNTS]).reshape(-1)[0]))
    datasets = reader.get_field(gguf.Keys.IMatrix.DATASETS)
    return Imatrix(entries, tuple(datasets.contents()) if datasets is not None else (),
                   int(reader.get_field(gguf.Keys.IMatrix.CHUNK_COUNT).contents()),
                   int(reader.get_field(gguf.Keys.IMatrix.CHUNK_SIZE).contents()))


def payloads(imatrix: Imatrix, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """GGUF tensor name → quantize payload (`quantize_payload`) for `names` (default: every entry)."""
    return {n: quantize_payload(imatrix.entries[n]) for n in (names if names is not None else imatrix.entries)}
