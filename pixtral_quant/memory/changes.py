"""The cheapest change that makes a plan fit: a table of candidate changes with a cost each, every
combination tried (one change per group), the lowest total cost that fits wins (then fewer changes, then the
lower peak). Costs rank quality and speed impact: placements cost latency only, quantizing more costs accuracy.

`supported` says whether convert can write the change today (the scheme's optional_targets, config._SchemeFacts;
placements are applied at load time by pixtral_quant.memory.placement). The "decoder INT4" change swaps the
scheme for its `four_bit` sibling; an optional target can only take the scheme's own `precision` (one checkpoint
has one quantization_config: GPTQ `bits`, bitsandbytes load_in_8bit vs load_in_4bit; transformers has no
per-module override, GPTQModel's and vLLM's `dynamic` do).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

from .budget import MemoryPlan, plan_memory
from .settings import Placement, Workload

PRECISION_RANK = {None: 16, "int8": 8, "int4": 4}


@dataclass(frozen=True)
class Change:
    """One candidate: key, what it does, cost, exclusive group, and the placement / target fields it sets."""

    key: str
    label: str
    cost: int
    group: str
    placement: dict = field(default_factory=dict)
    targets: dict = field(default_factory=dict)
    four_bit: bool = False


CHANGES: tuple[Change, ...] = (
    Change("embeddings-cpu", "embedding lookup on the CPU (rows copied to the GPU)", 1, "embeddings",
           placement={"embeddings": "cpu"}),
    Change("vision-offload", "vision tower + projector in CPU memory, moved to the GPU for the image pass", 2,
           "vision-place", placement={"vision": "offload"}),
    Change("projector-int8", "projector INT8", 3, "projector", targets={"projector": "int8"}),
    Change("vision-int8", "vision tower INT8", 4, "vision", targets={"vision_tower": "int8"}),
    Change("lm_head-int8", "lm_head INT8", 5, "lm_head", targets={"lm_head": "int8"}),
    Change("lm_head-int4", "lm_head INT4", 7, "lm_head", targets={"lm_head": "int4"}),
    Change("lm_head-cpu", "lm_head on the CPU (decode several times slower)", 11, "lm_head",
           placement={"lm_head": "cpu"}),
    Change("vision-int4", "vision tower INT4", 9, "vision", targets={"vision_tower": "int4"}),
    Change("decoder-int4", "decoder Linears INT4 instead of INT8", 12, "decoder", four_bit=True),
)


@dataclass
class Proposal:
    """The changes (cheapest first) and the plan they give; supported: change key → convert/runtime can do it."""

    changes: tuple[Change, ...]
    plan: MemoryPlan
    supported: dict[str, bool]
    recipe: object = None  # the recipe with the changes applied

    @property
    def cost(self) -> int:
        return sum(c.cost for c in self.changes)


def applicable(change: Change, recipe, placement: Placement) -> bool:
    """False when the change would not change anything (already placed so, or already as small)."""
    if change.four_bit:
        return recipe.scheme.four_bit is not None
    if any(getattr(placement, k) == v for k, v in change.placement.items()):
        return False
    if any(v != recipe.scheme.precision for v in change.targets.values()):
        return False  # not expressible in the checkpoint's single quantization_config
    return all(PRECISION_RANK[getattr(recipe.targets, k)] > PRECISION_RANK[v] for k, v in change.targets.items())


def apply(changes, recipe, placement: Placement):
    """(recipe, placement) with the changes applied."""
    from ..config import SCHEME_CONFIGS

    for c in changes:
        placement = replace(placement, **c.placement)
        if c.targets:
            recipe = replace(recipe, targets=replace(recipe.targets, **c.targets))
        if c.four_bit:
            int4 = {k: "int4" for k in ("lm_head", "vision_tower", "projector") if getattr(recipe.targets, k)}
            recipe = replace(recipe, scheme=SCHEME_CONFIGS[recipe.scheme.four_bit](),
                             targets=replace(recipe.targets, **int4))
    return recipe, placement


def supported(change: Change, recipe) -> bool:
    """Whether convert writes the change today (and transformers loads it back)."""
    can = recipe.scheme.optional_targets
    return all(can.get(k) == v for k, v in change.targets.items())


def _combos(candidates: list[Change]):
    """Every combination with at most one change per group, the empty one (no change) first."""
    for n in range(len(candidates) + 1):
        for combo in itertools.combinations(candidates, n):
            if len({c.group for c in combo}) == n:
                yield combo


def propose(config, shapes, recipe, card: int, workload: Workload, placement: Placement,
            reserve: int | None = None, only_supported: bool = False) -> Proposal | None:
    """The cheapest combination of CHANGES under which the plan fits (no change when it fits as it is), or None
    when none does."""
    candidates = [c for c in CHANGES if applicable(c, recipe, placement)
                  and (not only_supported or supported(c, recipe))]
    best: tuple | None = None
    for combo in _combos(candidates):
        cost = sum(c.cost for c in combo)
        if best is not None and (cost, len(combo)) > best[0][:2]:
            continue
        r, p = apply(combo, recipe, placement)
        plan = plan_memory(config, shapes, r, card, workload, p, reserve)
        key = (cost, len(combo), plan.peak)
        if plan.fits and (best is None or key < best[0]):
            best = (key, combo, plan, r)
    if best is None:
        return None
    return Proposal(best[1], best[2], {c.key: supported(c, recipe) for c in best[1]}, best[3])


def max_context(config, shapes, recipe, card: int, workload: Workload, placement: Placement,
                reserve: int | None = None, ceiling: int = 1 << 20) -> int | None:
    """The longest context (tokens) that fits with the workload's images and new tokens, or None if none does."""
    def fits(context: int) -> bool:
        return plan_memory(config, shapes, recipe, card, replace(workload, context=context), placement, reserve).fits

    from .budget import tokens_of

    low = tokens_of(config, replace(workload, context=None, text_tokens=0)).context
    if not fits(low):
        return None
    hi = ceiling
    if fits(hi):
        return hi
    while hi - low > 1:
        mid = (low + hi) // 2
        low, hi = (mid, hi) if fits(mid) else (low, mid)
    return low
