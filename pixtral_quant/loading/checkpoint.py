"""Open a Pixtral checkpoint in either format, check it against its config, and stream or load its weights.

    ckpt = open_checkpoint("/models/Pixtral-12B-2409")      # or an HF directory, a hub id, "tiny"
    for name, tensor in ckpt.iter_tensors(): ...            # runtime names, HF layout, one tensor at a time
    model = load_model(ckpt, dtype=torch.bfloat16)          # LlavaForConditionalGeneration, eval mode

Every weight is checked against a meta-device model built from the config before any data is read
(names and shapes from the safetensors headers), so a bad directory fails fast with the tensor and file named.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InputError
from . import hf, native
from .arch import expected_shapes, meta_model
from .detect import detect_format, resolve_path
from .files import TensorInfo, read_header, stream_tensors
from .tokenizer import HF_FILES, MISTRAL_FILES, find_tokenizer


@dataclass(frozen=True)
class Format:
    """What differs between the formats; everything else is shared."""

    read_config: Callable  # (directory, {disk name: TensorInfo}) -> LlavaConfig
    weight_files: Callable[[Path], tuple[Path, ...]]
    runtime_name: Callable[[str], tuple[str, str] | None]  # disk name -> (runtime name, layout)
    convert: Callable  # (disk name, tensor, config) -> tensor in the runtime layout


FORMATS: dict[str, Format] = {
    "hf": Format(hf.read_config, hf.weight_files, hf.runtime_name, hf.convert),
    "native": Format(native.read_config, native.weight_files, native.runtime_name, native.convert),
}
SHOWN = 8  # names listed in an error message before "... and N more"


@dataclass(frozen=True)
class Checkpoint:
    """A model directory, opened. tensors: runtime name → TensorInfo (on-disk name, file, dtype, shape)."""

    path: Path
    format: str  # "hf" | "native"
    config: object  # transformers LlavaConfig
    weight_files: tuple[Path, ...]
    tokenizer: Path | None
    tokenizer_kind: str | None  # "mistral" | "hf"
    layout: str | None  # "checkpoint" | "runtime" | "mixed" | "native"; None without weights
    tensors: Mapping[str, TensorInfo]
    source: str  # what the caller passed (path, shipped name or hub id)

    @property
    def has_weights(self) -> bool:
        return bool(self.weight_files)

    def iter_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield (runtime name, tensor) file by file, one tensor in memory at a time. Tensors keep their
        stored dtype; native q/k rows are permuted to the HF rotate-half layout."""
        fmt = FORMATS[self.format]
        for file in self.weight_files:
            by_disk = {info.name: rt for rt, info in self.tensors.items() if info.file == file}
            for disk_name, tensor in stream_tensors(file, list(by_disk)):
                yield by_disk[disk_name], fmt.convert(disk_name, tensor, self.config)


def iter_tensors(ckpt: Checkpoint) -> Iterator[tuple[str, torch.Tensor]]:
    """Function form of Checkpoint.iter_tensors: (runtime name, tensor) streamed one at a time."""
    return ckpt.iter_tensors()


def _no_weights(directory: Path) -> InputError:
    return InputError("this directory holds a config but no weights", where=directory,
                      fix="pass a directory with the .safetensors files (config-only copies are for inspect and plan)")


def open_checkpoint(path: str | Path, *, require_tokenizer: bool | None = None, require_weights: bool = False,
                    download_weights: bool = True) -> Checkpoint:
    """Open a directory, shipped name or hub id. require_tokenizer defaults to True when weights exist;
    require_weights refuses a config-only directory (convert). download_weights=False fetches only configs and
    tokenizer for a hub id (enough for inspect)."""
    directory = resolve_path(path, download_weights=download_weights)
    fmt_name = detect_format(directory)
    fmt = FORMATS[fmt_name]
    files = fmt.weight_files(directory)
    if require_weights and not files:
        raise _no_weights(directory)
    headers = _read_headers(files)
    config = fmt.read_config(directory, headers)
    tensors, layouts, unknown = _runtime_tensors(headers, fmt)
    if files:
        check_tensors(tensors, unknown, config, directory)
    tok = find_tokenizer(directory)
    if (require_tokenizer if require_tokenizer is not None else bool(files)) and tok is None:
        raise InputError("no tokenizer file found" + (" next to the weights" if files else ""), where=directory,
                         fix=f"copy the model's tokenizer ({', '.join(MISTRAL_FILES + HF_FILES)}) into this directory")
    layout = None if not layouts else layouts.pop() if len(layouts) == 1 else "mixed"
    return Checkpoint(directory, fmt_name, config, files, tok[1] if tok else None, tok[0] if tok else None,
                      layout, tensors, str(path))


def check_saved(path: str | Path) -> Path:
    """The local directory of a Hugging Face checkpoint that transformers' from_pretrained will load (quantized
    or not), checked without reading a tensor: a Pixtral llava config.json, its weight files present, every
    safetensors header intact. For the commands that hand a directory to transformers (bench), whose own errors
    would be a traceback about hub repo ids or safetensors internals."""
    directory = resolve_path(path)
    if detect_format(directory) != "hf":
        raise InputError("this is a Mistral-native checkpoint (params.json); transformers loads the Hugging Face "
                         "format", where=directory, fix="convert it: pixtral-quant convert --model DIR --out OUT "
                                                          "writes the Hugging Face format")
    hf.read_config(directory)
    files = hf.weight_files(directory)
    if not files:
        raise _no_weights(directory)
    _read_headers(files)
    return directory


def _read_headers(files: tuple[Path, ...]) -> dict[str, TensorInfo]:
    """Disk name → TensorInfo over all files; InputError for a name stored in two files."""
    out: dict[str, TensorInfo] = {}
    for file in files:
        for name, info in read_header(file).items():
            if name in out:
                raise InputError(f"tensor {name} is stored twice (also in {out[name].file.name})", where=file,
                                 fix="remove the stray file: shards of two different checkpoints are mixed")
            out[name] = info
    return out


def _runtime_tensors(headers: dict[str, TensorInfo], fmt: Format):
    """(runtime name → TensorInfo, set of layouts seen, [disk names with no runtime name])."""
    tensors: dict[str, TensorInfo] = {}
    layouts: set[str] = set()
    unknown: list[str] = []
    for disk_name, info in headers.items():
        mapped = fmt.runtime_name(disk_name)
        if mapped is None:
            unknown.append(disk_name)
            continue
        runtime, layout = mapped
        if runtime in tensors:
            raise InputError(f"{disk_name} and {tensors[runtime].name} are the same tensor in two layouts",
                             where=info.file, fix="keep one spelling of each tensor (re-save the checkpoint)")
        tensors[runtime] = info
        layouts.add(layout)
    return tensors, layouts, unknown


def _listed(names: list[str]) -> str:
    names = sorted(names)
    more = f" ... and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def check_tensors(tensors: Mapping[str, TensorInfo], unknown: list[str], config, directory: Path) -> None:
    """InputError unless the tensors are exactly those of the config's model, with the same shapes."""
    expected = expected_shapes(config)
    unexpected = unknown + [info.name for rt, info in tensors.items() if rt not in expected]
    missing = [rt for rt in expected if rt not in tensors]
    if unexpected or missing:
        parts = ([f"unexpected tensors: {_listed(unexpected)}"] if unexpected else []) + \
                ([f"missing tensors: {_listed(missing)}"] if missing else [])
        raise InputError("the weights do not match the config (" + "; ".join(parts) + ")", where=directory,
                         fix="use the config that came with these weights, and download every weight file")
    for rt, info in sorted(tensors.items()):
        if tuple(info.shape) != expected[rt]:
            raise InputError(f"tensor {info.name} has shape {list(info.shape)} but the config implies "
                             f"{list(expected[rt])}", where=info.file,
                             fix="use the config that came with these weights (or re-download both)")


def load_model(ckpt: Checkpoint, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """LlavaForConditionalGeneration with the checkpoint's weights cast to `dtype` on `device`, eval mode,
    requires_grad off. Built on the meta device and filled tensor by tensor (peak memory ≈ the model)."""
    if not ckpt.has_weights:
        raise _no_weights(ckpt.path)
    model = meta_model(ckpt.config)
    for name, tensor in ckpt.iter_tensors():
        _assign(model, name, tensor.to(device=device, dtype=dtype))
    _materialize_buffers(model, device)
    still_meta = [n for n, t in model.state_dict().items() if t.is_meta]
    if still_meta:  # check_tensors guarantees completeness; this guards the buffer rebuild
        raise RuntimeError(f"left on the meta device: {_listed(still_meta)}")
    return model.eval()


def _assign(model: torch.nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name)
    if leaf in module._parameters:
        setattr(module, leaf, torch.nn.Parameter(tensor, requires_grad=False))
    else:
        setattr(module, leaf, tensor)


def _materialize_buffers(model: torch.nn.Module, device) -> None:
    """Non-persistent buffers (the rotary inv_freq tables) are not in any checkpoint and stay on meta:
    rebuild their module from its config on `device` and take its buffers."""
    for module in model.modules():
        meta = [n for n, b in module.named_buffers(recurse=False) if b.is_meta]
        if not meta:
            continue
        with torch.device(device):
            fresh = type(module)(module.config)
        for n in meta:
            setattr(module, n, getattr(fresh, n))


def read_tensors(ckpt: Checkpoint, names: list[str]) -> dict[str, torch.Tensor]:
    """The named tensors (runtime names) in their stored dtype and the HF layout, reading only their files.
    Used to load one decoder layer at a time."""
    fmt = FORMATS[ckpt.format]
    wanted = {ckpt.tensors[n].name: n for n in names}
    out: dict[str, torch.Tensor] = {}
    for file in dict.fromkeys(ckpt.tensors[n].file for n in names):
        disk = [d for d, rt in wanted.items() if ckpt.tensors[rt].file == file]
        for disk_name, tensor in stream_tensors(file, disk):
            out[wanted[disk_name]] = fmt.convert(disk_name, tensor, ckpt.config)
    return out
