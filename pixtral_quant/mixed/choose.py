"""The knapsack's items and the choice: which Linears take one setting together, their candidates and bytes
(exact, from the storage model), the budget checks before any calibration, and the allocation from the measured
sensitivities (allocate.allocate_within)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError
from ..export import compressed
from ..memory.units import in_unit


@dataclass(frozen=True)
class Candidates:
    """The knapsack's items: groups of planned Linears that take one setting together (runtime names, plan
    order; vLLM fuses q/k/v and gate/up into one layer with one scheme, export/compressed.FUSED), and per item
    its candidate labels and their bytes (summed over the group)."""

    groups: tuple[tuple[str, ...], ...]
    labels: tuple[tuple[str, ...], ...]
    nbytes: tuple[tuple[int, ...], ...]

    @property
    def modules(self) -> list[str]:
        return [m for g in self.groups for m in g]

    def expand(self, picks: list[str]) -> dict[str, str]:
        """One label per item → the allocation {module: label}."""
        return {m: label for g, label in zip(self.groups, picks) for m in g}


def fused_groups(names: list[str]) -> list[tuple[str, ...]]:
    """Planned Linears grouped by the layer vLLM fuses them into (others alone), in first-appearance order."""
    key = {n: n.rsplit(".", 1)[0] + "." + compressed.FUSED.get(n.rsplit(".", 1)[-1], n.rsplit(".", 1)[-1])
           for n in names}
    order: dict[str, list[str]] = {}
    for n in names:
        order.setdefault(key[n], []).append(n)
    return [tuple(g) for g in order.values()]


def candidates_for(plan, shapes, scheme) -> Candidates:
    """Each item's candidates: the scheme's settings whose group size divides the in_features of its Linears."""
    from ..memory.storage import setting_bytes, setting_fits

    by_name = {lin.name: lin for lin in shapes.linears}
    groups, labels, sizes = [], [], []
    for group in fused_groups([e.name for e in plan.quantized()]):
        ok = [c for c in scheme.candidates if all(setting_fits(c, by_name[m].in_features) for m in group)]
        if not ok:
            raise UsageError(f"no candidate setting fits {group[0]} (in_features {by_name[group[0]].in_features})",
                             where="scheme.candidates", fix="add a setting whose group size divides it, or -1")
        groups.append(group)
        labels.append(tuple(ok))
        sizes.append(tuple(sum(setting_bytes(c, by_name[m], shapes.dtype) for m in group) for c in ok))
    return Candidates(tuple(groups), tuple(labels), tuple(sizes))


def smallest_allocation(cands: Candidates) -> dict[str, str]:
    return cands.expand([min(zip(sizes, labels))[1] for labels, sizes in zip(cands.labels, cands.nbytes)])


def check_budget(budget, cands: Candidates) -> None:
    """UsageError (exit 2) when even the smallest allocation is over the budget, naming what it needs."""
    need = budget.measure(smallest_allocation(cands))
    if need > budget.limit:
        raise UsageError(f"the budget, {budget.given}, is below the smallest allocation: its {budget.what} is "
                         f"{in_unit(need, budget.unit)} ({need} bytes, every Linear at its smallest setting)",
                         where=budget.flag,
                         fix=f"give at least {budget.flag} {in_unit(need + budget.overhead, budget.unit, up=True)}" + (
                             " (a larger card, a shorter --context or fewer --images)" if budget.flag == "--fit"
                             else ""))


def choose(cands: Candidates, losses: dict[str, dict[str, float]], budget) -> tuple[dict[str, str], bool]:
    """(allocation, True when the budget allows more than the least-loss allocation needs). An item's loss at a
    setting is the sum of its Linears' losses."""
    from .allocate import Option, allocate_within, least_loss

    items = [[Option(n, sum(losses[m][c] for m in g)) for c, n in zip(labels, sizes)]
             for g, labels, sizes in zip(cands.groups, cands.labels, cands.nbytes)]

    def as_allocation(picks: list[int]) -> dict[str, str]:
        return cands.expand([labels[k] for labels, k in zip(cands.labels, picks)])

    picks = allocate_within(items, lambda p: budget.measure(as_allocation(p)), budget.limit)
    return as_allocation(picks), picks == least_loss(items)


def check_given(allocation: dict, cands: Candidates) -> None:
    """UsageError unless a recipe's allocation names every planned Linear with one of its candidates."""
    options = {m: labels for g, labels in zip(cands.groups, cands.labels) for m in g}
    missing = sorted(set(options) - set(allocation))
    unknown = sorted(set(allocation) - set(options))
    bad = sorted(m for m in set(allocation) & set(options) if allocation[m] not in options[m])
    split = [g for g in cands.groups if len({allocation.get(m) for m in g}) > 1]
    problems = {"missing": missing[:3], "not planned": unknown[:3],
                "not a candidate": [(m, allocation[m]) for m in bad[:3]],
                "different settings inside a layer vLLM fuses": [list(g) for g in split[:2]]}
    if any(problems.values()):
        raise UsageError("it does not match the plan: " + "; ".join(f"{k} {v}" for k, v in problems.items() if v),
                         where="scheme.allocation", fix="give every planned Linear one of scheme.candidates, or "
                         "drop scheme.allocation and give --max-size / --fit")
