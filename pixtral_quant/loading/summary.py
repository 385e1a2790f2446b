"""What `pixtral-quant inspect` reports about a model, as one JSON-ready dict (no rendering here)."""

from __future__ import annotations

from pathlib import Path

from .arch import size_report
from .checkpoint import Checkpoint, open_checkpoint
from .params import rope_theta

TEXT_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
               "intermediate_size", "vocab_size", "max_position_embeddings", "rms_norm_eps")
VISION_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "head_dim", "intermediate_size",
                 "patch_size", "image_size", "num_channels", "hidden_act")
LAYOUTS = {"checkpoint": "HF checkpoint names (language_model.model.*)",
           "runtime": "HF runtime names (model.language_model.*)",
           "mixed": "HF names, both spellings mixed",
           "native": "Mistral-native names (layers.*, vision_encoder.*)",
           None: "no weights (config only)"}


def _arch(sub_config, fields: tuple[str, ...]) -> dict:
    out = {f: getattr(sub_config, f, None) for f in fields}
    out["rope_theta"] = rope_theta(sub_config)
    return out


def describe(path: str | Path | Checkpoint) -> dict:
    """Format, architecture, sizes and tokenizer of a model directory, shipped name or hub id (for a hub id
    only configs and tokenizer are fetched). Sizes: params and bytes per component, bytes per dtype."""
    ckpt = path if isinstance(path, Checkpoint) else open_checkpoint(path, download_weights=False)
    cfg = ckpt.config
    sizes = size_report(cfg, ckpt.tensors if ckpt.has_weights else None)
    return {
        "source": ckpt.source,
        "path": str(ckpt.path),
        "format": ckpt.format,
        "layout": ckpt.layout,
        "layout_description": LAYOUTS[ckpt.layout],
        "weight_files": [f.name for f in ckpt.weight_files],
        "tokenizer": {"file": ckpt.tokenizer.name, "kind": ckpt.tokenizer_kind} if ckpt.tokenizer else None,
        "text": _arch(cfg.text_config, TEXT_FIELDS),
        "vision": _arch(cfg.vision_config, VISION_FIELDS),
        "projector": {"hidden_act": cfg.projector_hidden_act,
                      "bias": bool(getattr(cfg, "multimodal_projector_bias", True))},
        "image_token_index": cfg.image_token_index,
        "params": sizes.params,
        "bytes": sizes.bytes,
        "by_dtype": sizes.by_dtype,
        "dtype_source": sizes.dtype_source,
    }
