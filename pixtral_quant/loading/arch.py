"""Parameter counts and bytes per component of a Pixtral model, from its config on the meta device.

Components (runtime names): vision tower, projector, embeddings, decoder linears (attention + MLP), norms,
lm_head; `text` = embeddings + decoder linears + norms + lm_head. Counts come from a meta-device
LlavaForConditionalGeneration (no memory); bytes from the safetensors headers when weights exist, else
from the config's dtype.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

# (component, runtime-name pattern). Every tensor of the model matches exactly one row.
COMPONENTS: tuple[tuple[str, re.Pattern], ...] = (
    ("vision_tower", re.compile(r"^model\.vision_tower\.")),
    ("projector", re.compile(r"^model\.multi_modal_projector\.")),
    ("embeddings", re.compile(r"^model\.language_model\.embed_tokens\.")),
    ("decoder_linears", re.compile(r"^model\.language_model\.layers\.\d+\.(self_attn|mlp)\.")),
    ("norms", re.compile(r"^model\.language_model\.(norm|layers\.\d+\.\w+_layernorm)\.")),
    ("lm_head", re.compile(r"^lm_head\.")),
)
TEXT_COMPONENTS = ("embeddings", "decoder_linears", "norms", "lm_head")


def meta_model(config):
    """LlavaForConditionalGeneration(config) on the meta device: shapes and dtypes, no storage."""
    from transformers import LlavaForConditionalGeneration

    with torch.device("meta"):
        return LlavaForConditionalGeneration(config)


def expected_shapes(config) -> dict[str, tuple[int, ...]]:
    """Runtime name → shape of every tensor a checkpoint must hold (parameters + persistent buffers)."""
    return {name: tuple(t.shape) for name, t in meta_model(config).state_dict().items()}


def component_of(name: str) -> str:
    """The component of a runtime tensor name; ValueError for a name outside the table."""
    hits = [comp for comp, pattern in COMPONENTS if pattern.match(name)]
    if len(hits) != 1:
        raise ValueError(f"{name} matches {hits or 'no'} component")
    return hits[0]


@dataclass
class SizeReport:
    """params/bytes: per component plus 'text' and 'total'. by_dtype: {dtype: {'elements', 'bytes'}}
    (stored elements, which differ from parameters once weights are packed). dtype_source says where
    bytes come from: 'safetensors headers' or 'config dtype <name> (no weights)'."""

    params: dict[str, int]
    bytes: dict[str, int]
    by_dtype: dict[str, dict[str, int]] = field(default_factory=dict)
    dtype_source: str = ""


def _with_totals(per_component: dict[str, int]) -> dict[str, int]:
    out = {comp: per_component.get(comp, 0) for comp, _ in COMPONENTS}
    out["text"] = sum(out[c] for c in TEXT_COMPONENTS)
    out["total"] = sum(out[c] for c, _ in COMPONENTS)
    return out


def parameter_counts(config) -> dict[str, int]:
    """Parameters per component (+ 'text', 'total') of the model `config` describes."""
    counts: dict[str, int] = {}
    for name, t in meta_model(config).state_dict().items():
        comp = component_of(name)
        counts[comp] = counts.get(comp, 0) + t.numel()
    return _with_totals(counts)


def config_dtype(config) -> str:
    """The dtype name config.json declares (top level, else text_config), 'float32' when it declares none."""
    dtype = getattr(config, "dtype", None) or getattr(config.text_config, "dtype", None) or torch.float32
    return str(dtype).removeprefix("torch.")


def size_report(config, tensors=None) -> SizeReport:
    """Sizes of a model. tensors: runtime name → files.TensorInfo from the headers, or None (config only)."""
    params = parameter_counts(config)
    if not tensors:
        dtype = config_dtype(config)
        itemsize = torch.empty((), dtype=getattr(torch, dtype)).element_size()
        nbytes = {k: v * itemsize for k, v in params.items()}
        return SizeReport(params, nbytes, {dtype: {"elements": params["total"], "bytes": nbytes["total"]}},
                          f"config dtype {dtype} (no weights)")
    per_comp: dict[str, int] = {}
    by_dtype: dict[str, dict[str, int]] = {}
    for name, info in tensors.items():
        comp = component_of(name)
        per_comp[comp] = per_comp.get(comp, 0) + info.nbytes
        slot = by_dtype.setdefault(info.dtype, {"elements": 0, "bytes": 0})
        slot["elements"] += info.numel
        slot["bytes"] += info.nbytes
    return SizeReport(params, _with_totals(per_comp), dict(sorted(by_dtype.items())), "safetensors headers")
