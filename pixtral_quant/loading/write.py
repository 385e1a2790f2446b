"""Write a Pixtral model (an opened Checkpoint or an in-memory LlavaForConditionalGeneration) in either format.

- write_native: params.json + consolidated.safetensors (or consolidated-0000N-of-0000M shards) + the Mistral
  tokenizer file, tensors in Mistral's names with interleaved q/k rows.
- write_hf: config.json + model.safetensors (or model-0000N-of-0000M shards + model.safetensors.index.json),
  in the checkpoint spelling transformers' save_pretrained writes, or in runtime names.

Tensors are streamed from a Checkpoint; at most one shard is held in memory (max_shard_bytes).
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from ..config import MAX_SHARD_GB
from ..errors import InputError
from . import names
from .detect import FORMATS
from .params import config_to_params
from .tokenizer import image_token_ids

DEFAULT_SHARD_BYTES = int(MAX_SHARD_GB * 1e9)
# (single-file name, shard name pattern) per format; the pattern takes (index, count), 1-based.
SHARD_NAMES = {"hf": ("model.safetensors", "model-{:05d}-of-{:05d}.safetensors"),
               "native": ("consolidated.safetensors", "consolidated-{:05d}-of-{:05d}.safetensors")}
HF_RENAMES: dict[str, Callable[[str], str]] = {"checkpoint": names.runtime_to_checkpoint, "runtime": lambda n: n}


def _source(source) -> tuple[object, Callable[[], Iterator[tuple[str, torch.Tensor]]], Path | None]:
    """(config, tensor iterator factory, tokenizer path or None) of a Checkpoint or a model."""
    if hasattr(source, "iter_tensors"):
        return source.config, source.iter_tensors, source.tokenizer
    if hasattr(source, "state_dict") and hasattr(source, "config"):
        return source.config, lambda: ((n, t.detach()) for n, t in source.state_dict().items()), None
    raise TypeError(f"expected a Checkpoint or a LlavaForConditionalGeneration, got {type(source).__name__}")


def write_shards(items: Iterator[tuple[str, torch.Tensor]], out_dir: Path, fmt: str,
                 max_shard_bytes: int | None = DEFAULT_SHARD_BYTES) -> dict[str, str]:
    """Save (name, tensor) pairs into one file or numbered shards; returns name → file name.
    A shard is closed before it would pass max_shard_bytes (None: one file). Streaming: each tensor's bytes go
    to disk as it arrives (_ShardFile), so memory holds one tensor whatever the shard size."""
    single, pattern = SHARD_NAMES[fmt]
    _refuse_stale_weights(out_dir, fmt)
    parts: list[Path] = []
    located: dict[str, int] = {}
    shard = _ShardFile(out_dir / ".part-0.safetensors")
    for name, tensor in items:
        nbytes = tensor.numel() * tensor.element_size()
        if shard.specs and max_shard_bytes is not None and shard.size + nbytes > max_shard_bytes:
            parts.append(shard.close())
            shard = _ShardFile(out_dir / f".part-{len(parts)}.safetensors")
        shard.add(name, tensor)
        located[name] = len(parts)
    parts.append(shard.close())
    final = [single] if len(parts) == 1 else [pattern.format(i + 1, len(parts)) for i in range(len(parts))]
    for part, name in zip(parts, final):
        part.replace(out_dir / name)
    return {name: final[i] for name, i in located.items()}


class _ShardFile:
    """One safetensors file written as tensors arrive: their bytes are appended to `<path>.data`; close() writes
    the header (synth.writer.header) and copies the tensors in safetensors' own order (item size descending,
    then name: what save_file writes and memory.checkpoint predicts). Hand-written because safetensors' save_file
    needs every tensor of the file in memory at once (a 5 GB shard = 5 GB of RSS, twice while it serializes)."""

    COPY_CHUNK = 16 << 20

    def __init__(self, path: Path):
        self.path, self.data = path, path.with_name(path.name + ".data")
        self.fh = self.data.open("wb")
        self.specs: list = []  # (Spec, offset in the data file)
        self.size = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        from ..synth.writer import Spec

        t = tensor.detach().cpu().contiguous()
        spec = Spec(name, str(t.dtype).removeprefix("torch."), tuple(t.shape))
        self.fh.write(t.reshape(-1).view(torch.uint8).numpy().data)
        self.specs.append((spec, self.size))
        self.size += spec.nbytes

    def close(self) -> Path:
        from ..memory.checkpoint import storage_order
        from ..synth.writer import header

        self.fh.close()
        ordered = sorted(self.specs, key=lambda so: storage_order(so[0].name, so[0].dtype))
        with self.path.open("wb") as out, self.data.open("rb") as src:
            out.write(header([spec for spec, _ in ordered]))
            for spec, offset in ordered:
                src.seek(offset)
                left = spec.nbytes
                while left:
                    chunk = src.read(min(left, self.COPY_CHUNK))
                    if not chunk:
                        raise OSError(f"{self.data} is shorter than the tensors written to it")
                    out.write(chunk)
                    left -= len(chunk)
        self.data.unlink()
        return self.path


def _refuse_stale_weights(out_dir: Path, fmt: str) -> None:
    # Old shards left beside new ones would be read together with them (or instead of them).
    glob = next(g for name, _, g in FORMATS if name == fmt)
    stale = sorted(p.name for p in out_dir.glob(glob))
    if stale:
        raise InputError(f"the output directory already holds weights ({', '.join(stale[:3])})", where=out_dir,
                         fix="write into a new or empty directory")


def write_native(source, out_dir: str | Path, *, tokenizer: str | Path | None = None,
                 max_shard_bytes: int | None = DEFAULT_SHARD_BYTES) -> Path:
    """Write the Mistral-native twin of `source` into out_dir (created). tokenizer: a Mistral tokenizer file
    (tekken.json / tokenizer.model.v7m1 ...), defaulting to the source checkpoint's. Returns out_dir."""
    config, tensors, tok = _source(source)
    tok = Path(tokenizer) if tokenizer is not None else tok
    if tok is None or tok.name == "tokenizer.json":
        raise InputError("a native checkpoint needs the Mistral tokenizer file and none was given",
                         where=tok or "tokenizer", fix="pass tokenizer=<tekken.json or tokenizer.model.v7m1>")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = (names.runtime_to_native(n, t, config) for n, t in tensors())
    write_shards(items, out, "native", max_shard_bytes)
    params = config_to_params(config, image_token_ids(tok))
    (out / "params.json").write_text(json.dumps(params, indent=2) + "\n")
    shutil.copy(tok, out / tok.name)
    return out


def write_hf(source, out_dir: str | Path, *, layout: str = "checkpoint", tokenizer: str | Path | None = None,
             max_shard_bytes: int | None = DEFAULT_SHARD_BYTES) -> Path:
    """Write `source` in Hugging Face format into out_dir (created). layout: 'checkpoint' (what
    save_pretrained writes) or 'runtime' (module names); both load in transformers. The config's dtype is
    set to the tensors' dtype. The tokenizer file (given, or the source's) is copied when there is one."""
    config, tensors, tok = _source(source)
    tok = Path(tokenizer) if tokenizer is not None else tok
    rename = HF_RENAMES[layout]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dtypes: set[torch.dtype] = set()
    total = [0]  # tensor bytes, for the index's total_size

    def items():
        for name, tensor in tensors():
            dtypes.add(tensor.dtype)
            total[0] += tensor.numel() * tensor.element_size()
            yield rename(name), tensor

    weight_map = write_shards(items(), out, "hf", max_shard_bytes)
    if len(set(weight_map.values())) > 1:
        _write_index(out, weight_map, total[0])
    config = copy.deepcopy(config)
    if len(dtypes) == 1:
        config.dtype = dtypes.pop()
    config.save_pretrained(out)
    if tok is not None:
        shutil.copy(tok, out / tok.name)
    return out


def _write_index(out: Path, weight_map: dict[str, str], total: int) -> None:
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
