"""The gptq-mixed exporter (convert.EXPORTERS["mixed"]): one compressed-tensors checkpoint whose Linears each
have the setting the allocation chose, written in one output run (output.py).

Order (bad input fails before anything is written or calibrated): plan → every Linear's candidate bytes
(memory/storage, exact) → the budget (mixed/budget.py); a budget below the smallest allocation is refused here,
with the smallest achievable size → calibration set → free disk → OUT.partial:
1. mixed/calibrate.py: the sequential loop (pipeline/sequential.py) with mixed/sensitivity.MixedSolver — each
   planned Linear (decoder, and the lm_head in row blocks when targets.lm_head is 'auto') solved at every
   candidate from one Hessian, every candidate's tensors into the layer journal — then the Fisher probe's
   backward pass and the sensitivities;
2. the allocation (mixed/choose.py → allocate.allocate_within: exact knapsack, re-checked against the budget's
   exact measure), or scheme.allocation as given;
3. the chosen tensors written in convert's order, config.json with compressed-tensors' quantization_config,
   side files, manifest.json (the recipe with its allocation, each Linear's losses and bytes, the budget).
A mixed conversion has no --resume: its journal holds every candidate, and an interrupted one starts over.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import BF16, parse_setting
from ..errors import UsageError
from ..memory.units import file_bytes, in_unit
from ..mixed.choose import Candidates
from . import atomic, checkpoint, compressed, manifest
from .journal import HEAD_UNIT, layer_unit
from .output import Output, run_output

OUTPUT = Output("the checkpoint", "free disk space or choose another --out")  # no --resume: nothing is kept


def export_mixed(ckpt, recipe, handler, out: Path, resume: bool, reporter):
    """Write the mixed-precision checkpoint of `ckpt` for `recipe` (config.GptqMixed) into OUT."""
    from ..memory.inventory import model_shapes
    from ..mixed.budget import budget_for
    from ..mixed.calibrate import calibrate
    from ..mixed.choose import candidates_for, check_budget, check_given, choose
    from ..pipeline.runtime import ConvertResult, calibration_set, open_journal
    from ..plan import make_plan, render

    if resume:
        raise UsageError("--resume continues uniform schemes; a gptq-mixed conversion keeps every candidate and "
                         "starts over", where="--resume", fix=f"delete {atomic.partial_path(out)} and run again")
    plan = make_plan(ckpt.config, recipe)
    shapes = model_shapes(ckpt.config)
    cands = candidates_for(plan, shapes, recipe.scheme)
    given = recipe.scheme.allocation
    budget = None if given is not None else budget_for(ckpt.config, shapes, recipe)
    if given is not None:
        check_given(given, cands)
    else:
        check_budget(budget, cands)
    cset = calibration_set(recipe.calibration, ckpt)
    need = (_disk_need(cands, shapes), "every candidate of every Linear and the checkpoint")

    def write(tmp: Path) -> ConvertResult:
        result = ConvertResult(tmp, plan, calibration_hash=cset.content_hash)
        journal = open_journal(tmp, ckpt, recipe, cset, False)
        losses, gptq_losses = calibrate(ckpt, recipe, plan, handler, cset, tmp, journal, reporter, result)
        allocation, spare = (given, False) if given is not None else choose(cands, losses, budget)
        reporter.log(render_allocation(cands, losses, allocation, budget, spare))
        _write(ckpt, recipe, plan, cands, losses, gptq_losses, allocation, budget, journal, tmp, result)
        result.layer_loss = {m: losses[m][allocation[m]] for m in allocation}  # the sensitivity at the choice
        return result

    result = run_output(out, OUTPUT, write, reporter, shown=render(plan, cset), need=need)
    result.bytes_after = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    return result


def _disk_need(cands: Candidates, shapes) -> int:
    """The journal holds every candidate of every Linear plus the other tensors; the checkpoint then needs at
    most its largest allocation again."""
    others = sum(it.nbytes for it in shapes.others if it.stored)
    return sum(map(sum, cands.nbytes)) + others + sum(map(max, cands.nbytes)) + others


def _write(ckpt, recipe, plan, cands, losses, gptq_losses, allocation, budget, journal, tmp: Path, result) -> None:
    from ..mixed.budget import with_allocation

    from ..config import parse_setting

    checkpoint.write_tensors(_assembled(ckpt, plan, journal, allocation), tmp, int(recipe.max_shard_gb * 1e9))
    groups: dict[tuple[int, int], list[str]] = {}
    for module, label in sorted(allocation.items()):
        if label != BF16:
            groups.setdefault(parse_setting(label), []).append(module)
    ignore = sorted(e.name for e in plan.entries if allocation.get(e.name, BF16) == BF16)
    checkpoint.write_config(ckpt.config, compressed.quantization_config(groups, ignore), tmp)
    side = checkpoint.copy_side_files(ckpt.path, tmp, ckpt.config)
    body = _manifest(ckpt, with_allocation(recipe, allocation), plan, cands, losses, gptq_losses, allocation, budget,
                     result)
    manifest.write_manifest(tmp, {**body, "side_files": side})


def _manifest(ckpt, recipe, plan, cands, losses, gptq_losses, allocation, budget, result) -> dict:
    body = manifest.body(ckpt, recipe, plan, result, [])
    # GPTQ's loss of each Linear at its chosen setting, as uniform schemes record it (a kept bf16 Linear: 0)
    body["layer_loss"] = {m: gptq_losses[m].get(allocation[m], 0.0) for m in sorted(allocation)}
    body["allocation"] = {m: {"setting": allocation[m], "group": list(g), "group_bytes": dict(zip(labels, sizes)),
                              "sensitivity": {c: losses[m][c] for c in labels},
                              "gptq_loss": gptq_losses[m]}
                          for g, labels, sizes in zip(cands.groups, cands.labels, cands.nbytes) for m in g}
    body["budget"] = None if budget is None else {"what": budget.what, "option": budget.flag,
                                                  "limit_bytes": budget.limit,
                                                  "measured_bytes": budget.measure(allocation)}
    return body


def _assembled(ckpt, plan, journal, allocation: dict[str, str]):
    """Every output tensor (runtime names) in convert's order: the non-decoder tensors (bf16), each decoder
    layer, then the lm_head when it was calibrated; each planned Linear as its chosen candidate (bf16: its
    original weight, read from the source)."""
    from ..capture import HEAD, LAYERS
    from ..loading.checkpoint import read_tensors

    late = HEAD in allocation
    outside = sorted(n for n in ckpt.tensors if not n.startswith(LAYERS) and not (late and n == f"{HEAD}.weight"))
    yield from sorted(read_tensors(ckpt, outside).items())
    units = [layer_unit(i) for i in range(ckpt.config.text_config.num_hidden_layers)] + ([HEAD_UNIT] if late else [])
    for unit in units:
        yield from _selected(ckpt, dict(journal.tensors(unit)), allocation)


def _selected(ckpt, stored: dict[str, torch.Tensor], allocation: dict[str, str]):
    """One unit's output tensors: the quantized modules' (module, suffix sorted), then the rest by name."""
    from ..loading.checkpoint import read_tensors
    from ..mixed.sensitivity import TAG

    quantized, rest, kept = {}, {}, set()
    for name, tensor in stored.items():
        base, tag, label = name.partition(TAG)
        module = base.rsplit(".", 1)[0]
        if not tag:
            rest[name] = tensor
        elif allocation[module] == label:
            quantized[base] = tensor
        elif allocation[module] == BF16:
            kept.add(module)
    wanted = [f"{m}.{leaf}" for m in sorted(kept) for leaf in ("weight", "bias") if f"{m}.{leaf}" in ckpt.tensors]
    rest.update(read_tensors(ckpt, wanted))
    yield from sorted(quantized.items())
    yield from sorted(rest.items())


def render_allocation(cands: Candidates, losses, allocation: dict[str, str], budget, spare: bool):
    """A rich Table: each Linear's chosen setting, its group's bytes and its sensitivity at every candidate."""
    from rich.table import Table

    from ..capture import LAYERS

    labels = sorted({c for ls in cands.labels for c in ls}, key=setting_order)
    used = sum(dict(zip(ls, ns))[allocation[g[0]]] for g, ls, ns in zip(cands.groups, cands.labels, cands.nbytes))
    title = f"allocation: quantized Linears {file_bytes(used)}"
    if budget is not None:  # in the unit the budget was given in
        title += (f"; {budget.what} {in_unit(budget.measure(allocation), budget.unit)} of "
                  f"{in_unit(budget.limit, budget.unit)}")
    caption = ("sensitivity at each setting: the Fisher-weighted output error, ≈ the KL it adds "
               "(mixed/sensitivity.py); fused Linears share one setting")
    if spare:
        caption += "\nthe budget allows more: this is already the least-loss allocation"
    # headers on two lines (int4 / g128) and the layer apart: the table fits 80 columns whole (it cut names to
    # "0.self_a…" and headers to "int4-g…" in an 80-column log)
    table = Table("layer", "Linear", "setting", "bytes", *(c.replace("-", "\n") for c in labels), title=title,
                  caption=caption)
    for column in table.columns:
        column.no_wrap = True
    for g, ls, ns in zip(cands.groups, cands.labels, cands.nbytes):
        for m in g:
            layer, _, name = m.removeprefix(LAYERS).partition(".")
            row = [f"{losses[m][c]:.2g}" if c in ls else "-" for c in labels]
            table.add_row(layer, name.rsplit(".", 1)[-1], allocation[m], file_bytes(dict(zip(ls, ns))[allocation[m]]),
                          *row)
    return table


def setting_order(label: str) -> tuple:
    """Columns from the fewest bytes to the most: int4-g128, int4-g64, int4-g32, int8-g128, ..., bf16 (per
    channel, g-1, before any group of its bits)."""
    setting = parse_setting(label)
    if setting is None:
        return (99, 0)
    bits, group = setting
    return (bits, -(group if group > 0 else 1 << 30))
