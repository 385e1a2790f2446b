"""The budget of a gptq-mixed conversion in bytes, measured exactly for any allocation: `max_size` counts the
checkpoint on disk (memory/checkpoint.estimate: tensors + safetensors headers), `fit` the peak GPU memory of
`plan`'s model (memory/budget.plan_memory) on that card, as `pixtral-quant plan` reports it: the workload and
placement of the recipe's promise (memory/settings.SHIPPED_TARGETS; else plan's defaults, everything on the GPU)
with the scheme's context / images. An allocation is {runtime module name: setting label}."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from ..errors import UsageError
from ..memory.inventory import ModelShapes, inventory
from ..memory.units import fmt_bytes, parse_size, unit_of


@dataclass(frozen=True)
class Budget:
    """what: 'checkpoint size' or 'GPU memory (plan)'; flag: the option that set it; limit: bytes;
    measure: allocation → bytes of the same quantity; given: the budget in words."""

    what: str
    flag: str
    limit: int
    measure: Callable[[dict[str, str]], int]
    given: str = ""  # the budget as the user gave it, for messages
    overhead: int = 0  # what the flag's value holds beyond `limit` (the CUDA reserve of a --fit card)
    unit: str = "GiB"  # the unit the user wrote it in: answers about it use the same


def with_allocation(recipe, allocation: dict[str, str]):
    """The recipe with scheme.allocation set (what the manifest records and `plan` sizes)."""
    return replace(recipe, scheme=replace(recipe.scheme, allocation=dict(sorted(allocation.items()))))


def budget_for(config, shapes: ModelShapes, recipe) -> Budget:
    """The scheme's budget (max_size or fit; UsageError for neither or both)."""
    scheme = recipe.scheme
    if (scheme.max_size is None) == (scheme.fit is None):
        raise UsageError("gptq-mixed needs exactly one budget", where="--max-size / --fit",
                         fix="give --max-size SIZE (checkpoint bytes, e.g. 6.5GB) or --fit GPU_MEMORY (e.g. 8GiB)")
    if scheme.max_size is not None:
        limit = parse_size(scheme.max_size, "--max-size")
        return Budget("checkpoint size", "--max-size", limit,
                      lambda alloc: _disk_bytes(shapes, with_allocation(recipe, alloc)),
                      f"{scheme.max_size} ({limit} bytes) on disk", unit=unit_of(scheme.max_size))
    return _fit_budget(config, shapes, recipe)


def _disk_bytes(shapes: ModelShapes, recipe) -> int:
    from ..memory.checkpoint import estimate

    return estimate(inventory(shapes, recipe), recipe.max_shard_bytes).total_bytes


def _fit_budget(config, shapes: ModelShapes, recipe) -> Budget:
    from ..memory.budget import plan_memory
    from ..memory.settings import reserve_for, target_for

    scheme = recipe.scheme
    card = parse_size(scheme.fit, "--fit")
    target = target_for(recipe.name)  # a shipped recipe's promise gives the workload and placement
    overrides = {"context": scheme.context, "images": scheme.images}
    workload = replace(target.workload, **{k: v for k, v in overrides.items() if v is not None})

    def peak(alloc: dict[str, str]) -> int:
        try:
            return plan_memory(config, shapes, with_allocation(recipe, alloc), card, workload, target.placement).peak
        except ValueError as exc:  # plan's own check: a context shorter than the prompt
            raise UsageError(str(exc), where="--context", fix="give a longer context or fewer images") from None

    reserve = reserve_for(card)
    return Budget("GPU memory (plan)", "--fit", card - reserve, peak,
                  f"a {scheme.fit} card ({fmt_bytes(card - reserve)} for tensors, {fmt_bytes(reserve)} kept "
                  "for CUDA)", reserve, unit_of(scheme.fit))
