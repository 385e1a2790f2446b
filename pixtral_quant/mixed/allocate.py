"""The allocation: one candidate per Linear, the least total sensitivity whose bytes fit a capacity. A
multiple-choice knapsack solved exactly as a 0/1 integer program by HiGHS (scipy.optimize.milp, relative gap 0):
bytes are the storage model's exact integers, so no rounding of sizes and no heuristic thresholds.

Pure: lists of numbers in, chosen indices out. Why an integer program rather than a dynamic programme over bytes:
the capacity of a 12B model is ~10^10 bytes; a DP table that large is out of reach, and HiGHS proves optimality
for a few thousand binaries in well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import require

EXTRA = "gptq"


@dataclass(frozen=True)
class Option:
    """One candidate of one item: its bytes (int) and loss (float, ≥ 0; 0 for the unquantized option)."""

    nbytes: int
    loss: float


class Infeasible(ValueError):
    """Even the smallest option of every item exceeds the capacity; .smallest holds that total."""

    def __init__(self, smallest: int, capacity: int):
        super().__init__(f"the smallest allocation needs {smallest} bytes, the capacity is {capacity}")
        self.smallest, self.capacity = smallest, capacity


def smallest(items: list[list[Option]]) -> int:
    return sum(min(o.nbytes for o in opts) for opts in items)


def least_loss(items: list[list[Option]]) -> list[int]:
    """Each item's least-loss option (the smallest of those on a tie): no capacity above its bytes lowers the
    total loss."""
    return [min(range(len(o)), key=lambda k: (o[k].loss, o[k].nbytes)) for o in items]


def largest_useful(items: list[list[Option]]) -> int:
    """Bytes of the least-loss allocation."""
    return sum(o[k].nbytes for o, k in zip(items, least_loss(items)))


def allocate(items: list[list[Option]], capacity: int) -> list[int]:
    """The index of the chosen option of each item: minimum Σ loss subject to Σ bytes ≤ capacity.
    Infeasible when no choice fits."""
    floor = smallest(items)
    if floor > capacity:
        raise Infeasible(floor, capacity)
    if largest_useful(items) <= capacity:
        return least_loss(items)
    return _milp(items, capacity)


def _milp(items: list[list[Option]], capacity: int) -> list[int]:
    np = require("numpy", EXTRA)
    optimize = require("scipy.optimize", EXTRA)
    sparse = require("scipy.sparse", EXTRA)
    sizes = [len(o) for o in items]
    n = sum(sizes)
    flat = [o for opts in items for o in opts]
    top = max(o.loss for o in flat) or 1.0
    cost = np.array([o.loss / top for o in flat])  # scaled to ≤ 1: HiGHS' tolerances are absolute
    item_of = np.repeat(np.arange(len(items)), sizes)
    one_each = sparse.csr_array((np.ones(n), (item_of, np.arange(n))), shape=(len(items), n))
    # Bytes relative to each item's smallest option: the row stays an exact integer sum, with smaller numbers.
    base = [min(o.nbytes for o in opts) for opts in items]
    extra = np.array([o.nbytes - base[i] for i, opts in enumerate(items) for o in opts], dtype=float)
    constraints = [optimize.LinearConstraint(one_each, 1, 1),
                   optimize.LinearConstraint(extra[None, :], 0, capacity - sum(base))]
    res = optimize.milp(cost, constraints=constraints, integrality=np.ones(n), bounds=optimize.Bounds(0, 1),
                        options={"mip_rel_gap": 0.0})
    if not res.success:
        raise RuntimeError(f"the knapsack solver failed: {res.message}")
    chosen = np.round(res.x).astype(int)
    starts = np.cumsum([0] + sizes[:-1])
    picks = [int(np.argmax(chosen[s:s + k])) for s, k in zip(starts, sizes)]
    used = sum(items[i][k].nbytes for i, k in enumerate(picks))
    if used > capacity:  # HiGHS' feasibility tolerance on a 10^10-scale row: never return an overfull pick
        raise RuntimeError(f"the knapsack solver returned {used} bytes for a capacity of {capacity}")
    return picks


MAX_ROUNDS = 32


def allocate_within(items: list[list[Option]], measure, limit: int) -> list[int]:
    """The allocation whose `measure` (picks → bytes: the whole checkpoint on disk, or plan's peak GPU memory)
    is ≤ limit. The knapsack's capacity covers the Linears only; what else the measure counts (other tensors,
    safetensors headers, KV cache ...) is read off the smallest allocation, and when the exact measure of an
    answer still overshoots (headers and kernel workspaces vary a little with the choice) the capacity shrinks by
    the overshoot and the knapsack runs again. Infeasible (with the smallest measure) when nothing fits."""
    base = [min(range(len(o)), key=lambda k: (o[k].nbytes, o[k].loss)) for o in items]
    floor = measure(base)
    if floor > limit:
        raise Infeasible(floor, limit)
    capacity = sum(items[i][k].nbytes for i, k in enumerate(base)) + limit - floor
    for _ in range(MAX_ROUNDS):
        picks = allocate(items, capacity)
        over = measure(picks) - limit
        if over <= 0:
            return picks
        capacity -= over
    raise RuntimeError(f"no allocation within {limit} bytes after {MAX_ROUNDS} rounds")
