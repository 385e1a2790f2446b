"""`pixtral-quant plan` as a library call: model + recipe + card + workload → one JSON-ready dict (no rendering).

    from pixtral_quant.memory import memory_report
    report = memory_report("pixtral-12b", "pixtral-12b-int4")   # the recipe's own promise (8 GiB card)
    report["fits"], report["peak_bytes"], report["proposal"]
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..plan import check_targets
from .budget import MemoryPlan, plan_memory
from .changes import Proposal, max_context, propose
from .checkpoint import estimate
from .inventory import inventory, model_shapes
from .settings import Target, target_for, with_placement
from .units import parse_size

CONFIG_FILES = ("config.json", "params.json")


@dataclass(frozen=True)
class ModelSource:
    """What the plan reads of a model: its config, its tensors' headers (empty for a config-only or an already
    quantized directory), its tokenizer file, and what the caller passed."""

    config: object
    tensors: dict
    tokenizer: Path | None
    source: str


def open_model(model: str | Path) -> ModelSource:
    """A directory, shipped name, hub id, or a config.json / params.json file. Weights, when present, are checked
    against the config; an already quantized checkpoint (quantization_config in config.json) is read for its
    config only."""
    from ..loading import open_checkpoint
    from ..loading.detect import detect_format, resolve_path
    from ..loading.files import read_json
    from ..loading.hf import read_config
    from ..loading.tokenizer import find_tokenizer

    path = Path(model)
    if path.is_file() and path.name in CONFIG_FILES:
        path = path.parent
    directory = resolve_path(path if path.exists() else model, download_weights=False)
    if detect_format(directory) == "hf" and "quantization_config" in read_json(directory / "config.json"):
        tok = find_tokenizer(directory)
        return ModelSource(read_config(directory), {}, tok[1] if tok else None, str(model))
    ckpt = open_checkpoint(directory, require_tokenizer=False, download_weights=False)
    return ModelSource(ckpt.config, dict(ckpt.tensors), ckpt.tokenizer, str(model))


def weights_dtype(ckpt) -> str | None:
    """The most common floating dtype of the checkpoint's tensors (None without weights: the config's)."""
    floats = Counter(t.dtype for t in ckpt.tensors.values() if t.dtype.startswith(("bfloat", "float")))
    return floats.most_common(1)[0][0] if floats else None


def resolve_target(recipe, gpu_memory=None, reserve=None, workload: dict | None = None,
                   placement: dict | None = None) -> tuple[Target, int, int | None]:
    """The recipe's promise with the caller's overrides: (target, card bytes, reserve bytes or None)."""
    target = target_for(recipe.name)
    target = Target(gpu_memory or target.gpu_memory,
                    replace(target.workload, **{k: v for k, v in (workload or {}).items() if v is not None}),
                    with_placement(target.placement, **(placement or {})))
    card = parse_size(target.gpu_memory, "--gpu-memory")
    return target, card, None if reserve is None else parse_size(reserve, "--reserve")


def memory_report(model, recipe, *, gpu_memory: str | None = None, reserve: str | None = None,
                  workload: dict | None = None, placement: dict | None = None) -> dict:
    """The plan of `recipe` (a Recipe, shipped name or file) for `model` (None: the model of the recipe's
    promise) on a card (default: the recipe's promise, settings.SHIPPED_TARGETS), with the cheapest change that
    fits when it does not."""
    from ..recipes import load_recipe

    recipe = load_recipe(recipe) if isinstance(recipe, (str, Path)) else recipe
    check_targets(recipe)  # the error convert gives, not a KeyError from the storage formats
    ckpt = open_model(model or target_for(recipe.name).model)
    shapes = model_shapes(ckpt.config, weights_dtype(ckpt))
    target, card, res = resolve_target(recipe, gpu_memory, reserve, workload, placement)
    limit = context_limit(ckpt.config)
    if (target.workload.context or 0) > limit:
        from ..errors import UsageError

        raise UsageError(f"{target.workload.context} tokens is beyond the model's context of {limit} "
                         "(max_position_embeddings)", where="--context", fix=f"give --context {limit} or less")
    try:
        plan = plan_memory(ckpt.config, shapes, recipe, card, target.workload, target.placement, res)
    except ValueError as exc:
        from ..errors import UsageError

        raise UsageError(str(exc), where="--context", fix="give a longer context or fewer images") from None
    args = (ckpt.config, shapes, recipe, card, target.workload, target.placement, res)
    fits_as_is = plan.fits
    report = {"model": ckpt.source, "recipe": recipe.name, "scheme": recipe.scheme.name,
              "calibrated": recipe.scheme.calibrated,
              "targets": asdict(recipe.targets), **plan_dict(plan),
              "checkpoint": checkpoint_dict(estimate(inventory(shapes, recipe), recipe.max_shard_bytes),
                                            recipe),
              "proposal": None if fits_as_is else proposal_dict(propose(*args)),
              "proposal_supported_today": None if fits_as_is else proposal_dict(propose(*args, only_supported=True)),
              "max_context": max_context(*args, ceiling=limit), "model_context": limit}
    if recipe.scheme.allocates and recipe.scheme.allocation is None:
        report["notes"] = [f"{recipe.scheme.name}: sized at its smallest allocation (every quantized Linear at its "
                           "smallest candidate); convert fills the budget above it. Plan the converted folder "
                           "(--recipe OUT) for the allocation it chose."]
    return report


def context_limit(config) -> int:
    """The model's context in tokens (text_config.max_position_embeddings): no plan goes beyond it."""
    return int(config.text_config.max_position_embeddings)


def plan_dict(plan: MemoryPlan) -> dict:
    """The JSON form of a MemoryPlan (bytes everywhere)."""
    return {
        "card_bytes": plan.card, "reserve_bytes": plan.reserve, "limit_bytes": plan.limit,
        "tokens": asdict(plan.tokens), "placement": asdict(plan.placement),
        "weights": {c: {"bytes": n, "where": plan.where[c]} for c, n in plan.weights.items()},
        "kv_cache": {"bytes_per_token": plan.kv_per_token, "bytes_per_1k_tokens": plan.kv_per_token * 1024,
                     "bytes": plan.kv_per_token * plan.tokens.context},
        "activations": plan.activations, "phases": plan.phases, "peak_phase": plan.peak_phase,
        "peak_bytes": plan.peak, "headroom_bytes": plan.limit - plan.peak, "fits": plan.fits,
        "host_bytes": plan.host,
    }


def checkpoint_dict(est, recipe) -> dict:
    """Predicted checkpoint files, and whether they meet the recipe's max_size_gb (GB = 1e9 bytes)."""
    limit = recipe.thresholds.max_size_gb
    return {"tensor_bytes": est.tensor_bytes, "header_bytes": est.header_bytes, "files": est.files,
            "total_bytes": est.total_bytes, "max_size_gb": limit,
            "size_ok": None if limit is None else est.total_bytes <= limit * 1e9}


def proposal_dict(p: Proposal | None) -> dict | None:
    if p is None:
        return None
    return {"changes": [{"key": c.key, "label": c.label, "cost": c.cost, "supported": p.supported[c.key]}
                        for c in p.changes],
            "cost": p.cost, "peak_bytes": p.plan.peak, "peak_phase": p.plan.peak_phase,
            "headroom_bytes": p.plan.limit - p.plan.peak, "placement": asdict(p.plan.placement),
            "scheme": p.recipe.scheme.name, "targets": asdict(p.recipe.targets)}
