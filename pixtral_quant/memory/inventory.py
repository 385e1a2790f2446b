"""Every tensor a converted model holds, from a config and a recipe, without any weights: runtime name,
component, dtype, shape, bytes, and whether the checkpoint stores it (rotary tables are rebuilt at load).

Which Linears are quantized follows the recipe's targets: decoder Linears when targets.decoder, and the
lm_head / vision tower / projector when their target names a precision. Unlike plan.make_plan (which refuses
what convert cannot write yet), any combination is sized here, so `pixtral-quant plan` can weigh changes.
The model's shapes are read once from a meta-device model (`model_shapes`); sizing a recipe is then arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import BF16
from ..loading.arch import component_of, config_dtype, meta_model
from ..plan import component_of as target_of
from .storage import (DTYPE_BYTES, Format, dense, format_for, linear_tensors, setting_bytes, setting_fits,
                      setting_format)


@dataclass(frozen=True)
class Item:
    """One tensor. component: loading.arch component (decoder_linears, lm_head, embeddings, vision_tower,
    projector, norms); module: the Linear it belongs to, or None; fmt: that Linear's format (kind, label)."""

    name: str
    component: str
    dtype: str
    shape: tuple[int, ...]
    stored: bool
    module: str | None = None
    fmt: Format | None = None

    @property
    def nbytes(self) -> int:
        n = DTYPE_BYTES[self.dtype]
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class LinearShape:
    """A Linear of the model: runtime module name, arch component, plan target, in/out features, bias."""

    name: str
    component: str
    target: str
    in_features: int
    out_features: int
    bias: bool


@dataclass(frozen=True)
class ModelShapes:
    """The model's Linears and its other tensors (Items in the unquantized dtype), read once from a config."""

    linears: tuple[LinearShape, ...]
    others: tuple[Item, ...]
    dtype: str


def model_shapes(config, dtype: str | None = None) -> ModelShapes:
    """Shapes of every tensor of the model `config` describes (meta device, no memory). dtype: of the floating
    tensors the checkpoint stores (default: the config's; convert copies unquantized tensors unchanged)."""
    dtype = dtype or config_dtype(config)
    model = meta_model(config)
    linears = tuple(LinearShape(n, component_of(f"{n}.weight"), target_of(n), m.in_features, m.out_features,
                                m.bias is not None)
                    for n, m in model.named_modules() if isinstance(m, torch.nn.Linear))
    owned = {f"{lin.name}.{leaf}" for lin in linears for leaf in ("weight", "bias")}
    stored = set(model.state_dict())
    others = tuple(Item(n, _component(n), dtype if t.dtype.is_floating_point and n in stored
                        else str(t.dtype).removeprefix("torch."), tuple(t.shape), n in stored)
                   for n, t in [*model.named_parameters(), *model.named_buffers()] if n not in owned)
    return ModelShapes(linears, others, dtype)


def _component(name: str) -> str:
    """arch component of a tensor; the rotary tables (non-persistent buffers) count with their tower."""
    prefixes = {"model.vision_tower.": "vision_tower", "model.language_model.": "norms"}
    try:
        return component_of(name)
    except ValueError:
        return next(comp for prefix, comp in prefixes.items() if name.startswith(prefix))


def linear_format(lin: LinearShape, recipe, dtype: str) -> Format:
    """The format the recipe gives one Linear (a scheme that allocates, gptq-mixed: the one its allocation
    chose)."""
    if recipe.scheme.allocates:
        allocation = recipe.scheme.allocation
        if allocation is None:
            return _smallest_candidate(lin, recipe, dtype)
        return setting_format(allocation.get(lin.name, BF16), dtype)
    wanted = recipe.targets.decoder if lin.target == "decoder" else getattr(recipe.targets, lin.target)
    if not wanted:
        return dense(dtype)
    return format_for(recipe.scheme, None if lin.target == "decoder" else wanted, dtype)


def _smallest_candidate(lin: LinearShape, recipe, dtype: str) -> Format:
    """gptq-mixed before convert chose: a planned Linear at its smallest candidate (the floor the allocation
    starts from; convert fills the budget above it), the others as the targets say (bf16)."""
    targeted = recipe.targets.decoder if lin.target == "decoder" else getattr(recipe.targets, lin.target) == "auto"
    if not targeted:
        return dense(dtype)
    fitting = [c for c in recipe.scheme.candidates if setting_fits(c, lin.in_features)]
    return setting_format(min(fitting, key=lambda c: setting_bytes(c, lin, dtype)), dtype)


def inventory(shapes: ModelShapes, recipe) -> list[Item]:
    """The converted model's tensors under `recipe` (quantized Linears expanded into their stored tensors)."""
    items: list[Item] = []
    for lin in shapes.linears:
        fmt = linear_format(lin, recipe, shapes.dtype)
        items += [Item(f"{lin.name}.{t.suffix}", lin.component, t.dtype, t.shape, True, lin.name, fmt)
                  for t in linear_tensors(fmt, lin.in_features, lin.out_features, lin.bias)]
    return items + list(shapes.others)


def by_component(items: list[Item], stored_only: bool = False) -> dict[str, int]:
    """Bytes per component (only the checkpoint's tensors with stored_only)."""
    out: dict[str, int] = {}
    for it in items:
        if it.stored or not stored_only:
            out[it.component] = out.get(it.component, 0) + it.nbytes
    return out


def format_shapes(shapes: ModelShapes, recipe) -> dict[str, list[tuple[int, int]]]:
    """Format kind → sorted distinct (in, out) of the Linears stored in it under `recipe` (kernel transients)."""
    out: dict[str, set[tuple[int, int]]] = {}
    for lin in shapes.linears:
        kind = linear_format(lin, recipe, shapes.dtype).kind
        out.setdefault(kind, set()).add((lin.in_features, lin.out_features))
    return {k: sorted(v) for k, v in out.items()}
