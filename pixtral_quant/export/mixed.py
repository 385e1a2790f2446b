"""The gptq-mixed exporter (convert.EXPORTERS["mixed"]): one compressed-tensors checkpoint whose Linears each
have the setting the allocation chose.

Order (bad input fails before anything is written or calibrated): plan → every Linear's candidate bytes
(memory/storage, exact) → the budget (mixed/budget.py); a budget below the smallest allocation is refused here,
with the smallest achievable size → calibration set → free disk → OUT.partial:
1. convert's calibrated loop with mixed/sensitivity.MixedSolver: each planned Linear (decoder, and the lm_head
   when targets.lm_head is 'auto') solved at every candidate from one Hessian; every candidate's tensors and
   loss go to the layer journal;
2. the allocation (mixed/allocate.allocate_within: exact knapsack, re-checked against the budget's exact
   measure), or scheme.allocation as given;
3. the chosen tensors written in convert's order, config.json with compressed-tensors' quantization_config,
   side files, manifest.json (the recipe with its allocation, each Linear's losses and bytes, the budget).
A mixed conversion has no --resume: its journal holds every candidate, and an interrupted one starts over.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import BF16
from ..errors import InputError, UsageError
from ..memory.units import fmt_bytes
from . import atomic, checkpoint, compressed, manifest
from .journal import DIR as journal_dir
from .journal import HEAD_UNIT, layer_unit


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
    from ..config import parse_setting
    from ..mixed.budget import setting_bytes

    by_name = {lin.name: lin for lin in shapes.linears}

    def fits(label: str, lin) -> bool:
        setting = parse_setting(label)
        return setting is None or setting[1] == -1 or lin.in_features % setting[1] == 0

    groups, labels, sizes = [], [], []
    for group in fused_groups([e.name for e in plan.quantized()]):
        ok = [c for c in scheme.candidates if all(fits(c, by_name[m]) for m in group)]
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
                         f"{fmt_bytes(need)} ({need} bytes, every Linear at its smallest setting)", where=budget.flag,
                         fix=f"give at least {need + budget.overhead} bytes" + (
                             " (a larger card, a shorter --context or fewer --images)" if budget.flag == "--fit"
                             else ""))


def choose(cands: Candidates, losses: dict[str, dict[str, float]], budget) -> tuple[dict[str, str], bool]:
    """(allocation, True when the budget allows more than the least-loss allocation needs). An item's loss at a
    setting is the sum of its Linears' losses."""
    from ..mixed.allocate import Option, allocate_within, least_loss

    items = [[Option(n, sum(losses[m][c] for m in g)) for c, n in zip(labels, sizes)]
             for g, labels, sizes in zip(cands.groups, cands.labels, cands.nbytes)]

    def as_allocation(picks: list[int]) -> dict[str, str]:
        return cands.expand([labels[k] for labels, k in zip(cands.labels, picks)])

    picks = allocate_within(items, lambda p: budget.measure(as_allocation(p)), budget.limit)
    return as_allocation(picks), picks == least_loss(items)


def export_mixed(ckpt, recipe, handler, out: Path, resume: bool, reporter):
    """Write the mixed-precision checkpoint of `ckpt` for `recipe` (config.GptqMixed) into OUT."""
    from ..convert import ConvertResult, calibration_set, check_free_disk, open_journal
    from ..memory.inventory import model_shapes
    from ..mixed.budget import budget_for
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
    check_free_disk(out, _disk_need(cands, shapes), "every candidate of every Linear and the checkpoint")
    reporter.log(render(plan))
    tmp = atomic.partial_dir(out)
    result = ConvertResult(tmp, plan, calibration_hash=cset.content_hash)
    try:
        journal = open_journal(tmp, ckpt, recipe, cset, False)
        losses, gptq_losses = _calibrate(ckpt, recipe, plan, handler, cset, tmp, journal, reporter, result)
        allocation, spare = (given, False) if given is not None else choose(cands, losses, budget)
        reporter.log(render_allocation(cands, losses, allocation, budget, spare))
        _write(ckpt, recipe, plan, cands, losses, gptq_losses, allocation, budget, journal, tmp, result)
    except BaseException as exc:
        atomic.discard(tmp)  # no --resume: nothing is kept
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise InputError("no space left on the device while writing the checkpoint", where=tmp.parent,
                             fix="free disk space or choose another --out") from None
        raise
    atomic.commit(tmp, out, marker=journal_dir)
    result.layer_loss = {m: losses[m][allocation[m]] for m in allocation}
    result.bytes_after = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    return result


def _calibrate(ckpt, recipe, plan, handler, cset, tmp: Path, journal, reporter, result):
    """convert's sequential pipeline with MixedSolver (every candidate of every planned Linear into the journal),
    then the Fisher probe's backward pass. Returns ({module: {setting: sensitivity}}, {module: {setting: GPTQ
    loss}}); bf16 (when a candidate) has sensitivity 0."""
    from .. import capture
    from ..calibration.dataset import open_tokenizer
    from ..convert import GIB, calib_budget, compute_setup
    from ..mixed.fisher import FisherProbe

    device, dtype = compute_setup()
    scheme, calib = recipe.scheme, recipe.calibration
    scratch = capture.scratch_dir(tmp)
    store = capture.ActivationStore(int(calib_budget(recipe) * GIB), scratch / "layers")
    probe = FisherProbe(scheme.fisher_samples, int(FISHER_BUDGET_GIB * GIB), scratch / "fisher", seed=calib.seed)
    rowerr: dict[str, dict[str, torch.Tensor]] = {}
    gptq: dict[str, dict[str, float]] = {}
    try:
        shell = capture.load_shell(ckpt, device, dtype)
        samples = (capture.strip_images(m) if calib.text_only else m for m in cset)
        kwargs, result.stats = capture.capture_inputs(shell, samples, open_tokenizer(ckpt.tokenizer), device, store,
                                                      reporter.task("vision tower + projector", len(cset)))
        reporter.done()
        text_config = shell.config.text_config
        del shell
        n_layers = text_config.num_hidden_layers
        targets = {}
        for i in range(n_layers):
            probe.keep(i, store)
            targets[i] = _one_layer(ckpt, text_config, i, plan, handler, store, kwargs, device, dtype, journal,
                                    rowerr, gptq, reporter)
        head = capture.HEAD in plan.names()
        if head:
            tensors, gptq[capture.HEAD] = capture.calibrate_head(ckpt, handler.solver, store, device, dtype,
                                                                 reporter.task("lm_head", len(store)))
            reporter.done()
            kept = _split_rowerr(capture.HEAD, tensors, rowerr)
            journal.save(HEAD_UNIT, {f"{capture.HEAD}.{k}": v for k, v in sorted(kept.items())}, {}, {},
                         [capture.HEAD])
        fisher = probe.measure(ckpt, text_config, kwargs, store, targets, head, device, dtype,
                               reporter.task("Fisher (backward, top down)", n_layers))
        reporter.done()
    finally:
        capture.remove_scratch(scratch)
    return _sensitivities(rowerr, fisher, recipe.scheme), gptq


FISHER_BUDGET_GIB = 1.0  # the Fisher probe's kept layer inputs stay in memory up to this, then go to disk


def _one_layer(ckpt, text_config, i, plan, handler, store, kwargs, device, dtype, journal, rowerr, gptq, reporter):
    """Decoder layer i: every candidate of its planned Linears into the journal; returns their names (relative)."""
    from .. import capture
    from ..convert import release_freed_memory

    prefix = f"{capture.LAYERS}{i}."
    layer, raw = capture.load_layer(ckpt, text_config, i, device, dtype)
    names = sorted(n[len(prefix):] for n in plan.names() if n.startswith(prefix))
    passes = len(capture.groups_for(handler.config.true_sequential)) + 1
    advance = reporter.task(f"layer {i + 1}/{text_config.num_hidden_layers}", passes * len(store))
    solved = capture.calibrate_layer(layer, names, handler.solver, store, kwargs, device,
                                     handler.config.true_sequential, advance)
    reporter.done()
    tensors = {}
    for name, (candidates, losses, _) in sorted(solved.items()):
        raw.pop(f"{name}.weight")
        raw.pop(f"{name}.bias", None)
        gptq[prefix + name] = losses
        kept = _split_rowerr(prefix + name, candidates, rowerr)
        tensors.update((f"{prefix}{name}.{k}", v) for k, v in sorted(kept.items()))
    tensors.update((prefix + k, v) for k, v in sorted(raw.items()))
    journal.save(layer_unit(i), tensors, {}, {}, sorted(prefix + n for n in solved))
    del layer, tensors
    release_freed_memory()
    return names


def _split_rowerr(module: str, candidates: dict, rowerr: dict) -> dict:
    """The candidate tensors without the per-row errors, which go to rowerr[module][setting]."""
    from ..mixed.sensitivity import ROWERR, TAG

    kept = {}
    for key, value in candidates.items():
        base, _, label = key.partition(TAG)
        if base == ROWERR:
            rowerr.setdefault(module, {})[label] = value
        else:
            kept[key] = value
    return kept


def _sensitivities(rowerr: dict, fisher: dict, scheme) -> dict[str, dict[str, float]]:
    from ..mixed.sensitivity import weighted_loss

    out = {m: {label: weighted_loss(fisher[m], e) for label, e in per.items()} for m, per in rowerr.items()}
    if BF16 in scheme.candidates:
        for per in out.values():
            per[BF16] = 0.0
    return out


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
    from ..convert import manifest_body

    body = manifest_body(ckpt, recipe, plan, result, [])
    body["layer_loss"] = {}
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

    quantized, rest = {}, {}
    for name, tensor in stored.items():
        base, tag, label = name.partition(TAG)
        module = base.rsplit(".", 1)[0]
        if not tag:
            rest[name] = tensor
        elif allocation[module] == label:
            quantized[base] = tensor
    kept = sorted({m for m in (n.partition(TAG)[0].rsplit(".", 1)[0] for n in stored if TAG in n)
                   if allocation[m] == BF16})
    wanted = [f"{m}.{leaf}" for m in kept for leaf in ("weight", "bias") if f"{m}.{leaf}" in ckpt.tensors]
    rest.update(read_tensors(ckpt, wanted))
    yield from sorted(quantized.items())
    yield from sorted(rest.items())


def render_allocation(cands: Candidates, losses, allocation: dict[str, str], budget, spare: bool):
    """A rich Table: each Linear's chosen setting, its group's bytes and its sensitivity at every candidate."""
    from rich.table import Table

    from ..capture import LAYERS

    labels = sorted({c for ls in cands.labels for c in ls}, key=lambda c: (c == BF16, c))
    used = sum(dict(zip(ls, ns))[allocation[g[0]]] for g, ls, ns in zip(cands.groups, cands.labels, cands.nbytes))
    title = f"allocation: quantized Linears {fmt_bytes(used)}"
    if budget is not None:
        title += f"; {budget.what} {fmt_bytes(budget.measure(allocation))} of {fmt_bytes(budget.limit)}"
    caption = ("sensitivity at each setting: the Fisher-weighted output error, ≈ the KL it adds "
               "(mixed/sensitivity.py); fused Linears share one setting")
    if spare:
        caption += "\nthe budget allows more: this is already the least-loss allocation"
    table = Table("Linear", "setting", "bytes", *labels, title=title, caption=caption)
    for g, ls, ns in zip(cands.groups, cands.labels, cands.nbytes):
        for m in g:
            row = [f"{losses[m][c]:.2g}" if c in ls else "-" for c in labels]
            table.add_row(m.removeprefix(LAYERS), allocation[m], str(dict(zip(ls, ns))[allocation[m]]), *row)
    return table
