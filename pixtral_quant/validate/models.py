"""The two sides of a validation: the reference (any Pixtral checkpoint, HF or Mistral-native, through the
project loader) and each candidate (a converted checkpoint, through plain transformers as a user loads it).

Checks made before any model runs (InputError → exit 2): a candidate that is half-written (`*.partial`, a file
of its manifest missing or of the wrong size), and a candidate whose architecture or vocabulary differs from
the reference's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InputError
from ..export.atomic import SUFFIX
from ..export.manifest import MANIFEST

# Config fields that must agree for the two models to be compared token for token.
SAME_ARCH = {
    "text_config": ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                    "vocab_size", "head_dim"),
    "vision_config": ("model_type", "hidden_size", "num_hidden_layers", "patch_size", "image_size"),
    "": ("model_type", "image_token_index", "projector_hidden_act"),
}
# quantization_config → weight bits (picks DEFAULT_THRESHOLDS); unquantized checkpoints are 16.
BITS_OF = {
    "gptq": lambda qc: int(qc["bits"]),
    "bitsandbytes": lambda qc: 4 if qc.get("load_in_4bit") else 8,
    "gguf": lambda qc: GGUF_BITS.get(qc["type"], 4),
    # gptq-mixed: the narrowest setting of its config groups sets the bar (every group is at least that precise)
    "compressed-tensors": lambda qc: min(int(g["weights"]["num_bits"]) for g in qc["config_groups"].values()),
}
# GGUF file type → the DEFAULT_THRESHOLDS row it is held to: unquantized 16, Q8_0 / Q6_K (≈ 6.6 bits per weight,
# KL near INT8's) 8, every other type 4.
GGUF_BITS = {"f32": 16, "f16": 16, "bf16": 16, "q8_0": 8, "q6_k": 8}
# A GGUF output folder's metadata (file role, key) → the config field it records, for check_same_architecture.
# GGUF does not store model_type, image_token_index or projector_hidden_act: those are not compared for it.
GGUF_FIELDS = {
    ("text", "llama.embedding_length"): ("text_config", "hidden_size"),
    ("text", "llama.block_count"): ("text_config", "num_hidden_layers"),
    ("text", "llama.attention.head_count"): ("text_config", "num_attention_heads"),
    ("text", "llama.attention.head_count_kv"): ("text_config", "num_key_value_heads"),
    ("text", "llama.attention.key_length"): ("text_config", "head_dim"),
    ("mmproj", "clip.vision.embedding_length"): ("vision_config", "hidden_size"),
    ("mmproj", "clip.vision.block_count"): ("vision_config", "num_hidden_layers"),
    ("mmproj", "clip.vision.patch_size"): ("vision_config", "patch_size"),
    ("mmproj", "clip.vision.image_size"): ("vision_config", "image_size"),
}


@dataclass(frozen=True)
class Candidate:
    """A checkpoint to validate. label: what reports call it (folder name, made unique by the caller)."""

    path: Path
    label: str
    config: dict
    manifest: dict | None
    format: str = "checkpoint"  # or "gguf": a GGUF output folder (runs with --engine llama.cpp)

    @property
    def quantization(self) -> dict | None:
        return self.config.get("quantization_config")

    @property
    def bits(self) -> int:
        qc = self.quantization
        if not qc:
            return 16
        method = qc.get("quant_method")
        if method not in BITS_OF:
            raise InputError(f"quant_method {method!r} is not one validate knows", where=self.path / "config.json",
                             fix=f"validate checkpoints of {sorted(BITS_OF)} or unquantized ones")
        return BITS_OF[method](qc)

    @property
    def weight_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.glob("*.safetensors" if self.format == "checkpoint"
                                                             else "*model.gguf"))


def open_candidate(path: str | Path, label: str | None = None) -> Candidate:
    """Read config.json and manifest.json of a finished checkpoint; InputError for half-written ones."""
    path = Path(path)
    if path.name.endswith(SUFFIX) or (not path.exists() and path.with_name(path.name + SUFFIX).exists()):
        raise InputError("this checkpoint is half-written (a conversion did not finish)", where=path,
                         fix="run convert again to completion and validate its output folder (not *.partial)")
    from ..export.gguf import layout

    if layout.is_gguf_dir(path):
        return _gguf_candidate(path, label)
    if not path.is_dir():
        raise InputError("no such directory" if not path.exists() else "not a directory", where=path,
                         fix="pass the folder `pixtral-quant convert --out` wrote")
    if not (path / "config.json").is_file():
        raise InputError("no config.json: not a Hugging Face checkpoint directory", where=path,
                         fix="pass the folder `pixtral-quant convert --out` wrote")
    config = _read_json(path / "config.json")
    manifest = _read_json(path / MANIFEST) if (path / MANIFEST).is_file() else None
    if manifest is not None:
        _check_files(path, manifest)
    from ..loading import check_saved

    check_saved(path)  # a Pixtral llava config, its weight files, every safetensors header intact
    return Candidate(path, label or path.name, config, manifest)


def _gguf_candidate(path: Path, label: str | None) -> Candidate:
    """A GGUF output folder: its config fields from the GGUF metadata (GGUF_FIELDS, vocab_size = the token list's
    length), its type from the manifest as a quantization_config {'quant_method': 'gguf', 'type': ...}."""
    import gguf

    from ..export.gguf import layout

    files = layout.files(path)
    manifest = _read_json(path / MANIFEST) if (path / MANIFEST).is_file() else None
    if manifest is not None:
        _check_files(path, manifest)
    readers = {role: gguf.GGUFReader(files[role]) for role in ("text", "mmproj")}
    config: dict = {"text_config": {}, "vision_config": {}}
    for (role, key), (section, name) in GGUF_FIELDS.items():
        field = readers[role].get_field(key)
        config[section][name] = field.contents() if field is not None else None
    config["text_config"]["vocab_size"] = len(readers["text"].get_field("tokenizer.ggml.tokens").contents())
    kind = (manifest or {}).get("gguf", {}).get("type", "f16")
    config["quantization_config"] = {"quant_method": "gguf", "type": kind}
    return Candidate(path, label or path.name, config, manifest, format="gguf")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read it ({exc})", where=path, fix="convert again; the file is damaged") from None


def _check_files(path: Path, manifest: dict) -> None:
    """Every file the manifest lists exists with its recorded size (sha256 is not recomputed here: cheap check)."""
    for name, entry in sorted(manifest.get("files", {}).items()):
        f = path / name
        if not f.is_file() or f.stat().st_size != entry["bytes"]:
            state = "missing" if not f.is_file() else f"{f.stat().st_size} bytes, manifest says {entry['bytes']}"
            raise InputError(f"{name} is {state}: the checkpoint is half-written or was modified", where=path,
                             fix="convert again into a fresh --out")


def check_same_architecture(reference_config, candidate: Candidate) -> None:
    """InputError naming the first differing config field (reference vs candidate)."""
    ref = reference_config.to_dict()
    for section, keys in SAME_ARCH.items():
        a = ref.get(section, {}) if section else ref
        b = candidate.config.get(section, {}) if section else candidate.config
        for key in keys:
            if candidate.format == "gguf" and key not in b:
                continue  # not stored in GGUF metadata (GGUF_FIELDS says which fields are)
            if a.get(key) != b.get(key):
                field = f"{section}.{key}" if section else key
                raise InputError(f"{field} is {b.get(key)!r} here but {a.get(key)!r} in the reference: the two "
                                 "models are not the same architecture / vocabulary", where=candidate.path / "config.json",
                                 fix="validate a checkpoint converted from this reference (or pass its real reference)")


def load_reference(ckpt, device: torch.device, dtype: torch.dtype):
    """The reference through the project loader (reads HF and Mistral-native)."""
    from ..loading import load_model

    return load_model(ckpt, dtype=dtype, device=device)


def load_candidate(candidate: Candidate, device: torch.device, dtype: torch.dtype):
    """The candidate through plain transformers (no project code), as its users will load it."""
    return load_converted(candidate.path, device=device, dtype=dtype)


def load_converted(path, device="cpu", dtype=torch.float32):
    """A converted checkpoint through plain transformers (no project code), computing in `dtype` like the
    reference: transformers' bitsandbytes loader keeps every unquantized module in bf16 whatever dtype is
    asked for, so those are cast here (bitsandbytes modules cast their inputs to their own compute dtype)."""
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(path, dtype=dtype, device_map=str(device)).eval()
    if dtype != torch.float32:
        return model
    for module in model.modules():
        if type(module).__module__.startswith("bitsandbytes"):
            continue
        for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            if tensor.dtype == torch.bfloat16:
                tensor.data = tensor.data.float()
    return model
