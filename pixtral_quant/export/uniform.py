"""The uniform-scheme exporter (convert.EXPORTERS["checkpoint"]): one safetensors checkpoint (GPTQ v1 /
bitsandbytes / RTN) written through the resume journal (journal.py) in one output run (output.py).

Order: plan → calibration set → free disk (the checkpoint and its journal) → OUT.partial: each decoder layer
(data-free schemes: straight from the checkpoint; calibrated schemes: the sequential loop, pipeline/gptq.py, then
the lm_head) into the journal as soon as it is done → shards streamed from the journal → config, side files,
manifest → atomic swap into OUT. A run killed at any point resumes from its last finished layer (`--resume`) and
writes the same bytes as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from .. import capture
from ..pipeline.runtime import ConvertResult, Reporter, calibration_set, open_journal, release_freed_memory
from ..plan import Plan, make_plan, render
from . import checkpoint, manifest
from .journal import HEAD_UNIT, Journal, layer_unit
from .output import Output, run_output

OUTPUT = Output("the checkpoint", "free disk space (see the size `pixtral-quant plan` predicts) or choose another "
                "--out", resumable=True)


def export_checkpoint(ckpt, recipe, handler, out: Path, resume: bool, reporter: Reporter) -> ConvertResult:
    """The safetensors checkpoint (GPTQ v1 / bitsandbytes) through the resume journal, swapped into OUT."""
    plan = make_plan(ckpt.config, recipe)
    cset = calibration_set(recipe.calibration, ckpt) if handler.needs_calibration else None
    need = None if resume else (_disk_need(ckpt.config, recipe), "the checkpoint and its resume journal")

    def write(tmp: Path) -> ConvertResult:
        journal = open_journal(tmp, ckpt, recipe, cset, resume)
        return _write(ckpt, recipe, plan, handler, cset, tmp, journal, reporter)

    result = run_output(out, OUTPUT, write, reporter, shown=render(plan, cset), resume=resume, need=need)
    result.bytes_after = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    return result


def _disk_need(config, recipe) -> int:
    """Bytes the checkpoint plus its resume journal (the same bytes again) need; the checkpoint size is the
    plan's exact prediction."""
    from ..memory.checkpoint import estimate
    from ..memory.inventory import inventory, model_shapes

    return 2 * estimate(inventory(model_shapes(config), recipe), int(recipe.max_shard_gb * 1e9)).total_bytes


def _write(ckpt, recipe, plan: Plan, handler, cset, tmp: Path, journal: Journal, reporter: Reporter) -> ConvertResult:
    """Every unit of work into the journal (skipping those a previous run finished), then the shards from it."""
    result = ConvertResult(tmp, plan, calibration_hash=cset.content_hash if cset is not None else None)
    if handler.needs_calibration:
        from ..pipeline.gptq import calibrated_layers

        calibrated_layers(ckpt, plan, handler, cset, recipe, tmp, journal, reporter, result)
    else:
        _data_free_layers(ckpt, plan, handler, journal, reporter)
    done: set[str] = set()
    for unit in journal.units.values():
        done.update(unit["done"])
        result.layer_loss.update(unit["losses"])
    checkpoint.write_tensors(_assembled(ckpt, plan, handler, journal, done), tmp, int(recipe.max_shard_gb * 1e9))
    plan.check_done(done)
    checkpoint.write_config(ckpt.config, handler.quantization_config(plan), tmp)
    side = checkpoint.copy_side_files(ckpt.path, tmp, ckpt.config)
    manifest.write_manifest(tmp, manifest.body(ckpt, recipe, plan, result, side))
    return result


def _outside(ckpt, plan: Plan, handler) -> list[str]:
    """The non-decoder tensors, in output order. A calibrated lm_head waits for the decoder's outputs: it is
    solved after the last layer and written last."""
    late = {f"{capture.HEAD}.weight"} if handler.needs_calibration and capture.HEAD in plan.names() else set()
    return sorted(n for n in ckpt.tensors if not n.startswith(capture.LAYERS) and n not in late)


def _layer_names(ckpt, i: int) -> list[str]:
    prefix = f"{capture.LAYERS}{i}."
    return sorted(n for n in ckpt.tensors if n.startswith(prefix))


def _assembled(ckpt, plan: Plan, handler, journal: Journal, done: set[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """Every output tensor (runtime names) in shard order: the non-decoder tensors (quantized here when planned:
    data-free and cheap), then the decoder layers and a calibrated lm_head from the journal, one unit in memory."""
    from ..loading.checkpoint import read_tensors

    yield from _emit(read_tensors(ckpt, _outside(ckpt, plan, handler)), plan.names(), handler, done)
    for i in range(ckpt.config.text_config.num_hidden_layers):
        yield from journal.tensors(layer_unit(i))
    if journal.has(HEAD_UNIT):
        yield from journal.tensors(HEAD_UNIT)


def _emit(raw: dict[str, torch.Tensor], targets: set[str], handler, done: set[str]):
    """raw tensors (runtime names) with every planned module's weight (+bias) replaced by the handler's tensors."""
    modules = sorted({n.rsplit(".", 1)[0] for n in raw} & targets)
    for module in modules:
        quantized = handler.quantize(module, raw.pop(f"{module}.weight"), raw.pop(f"{module}.bias", None))
        done.add(module)
        yield from ((f"{module}.{k}", v) for k, v in sorted(quantized.items()))
    yield from sorted(raw.items())


def _data_free_layers(ckpt, plan: Plan, handler, journal: Journal, reporter: Reporter) -> None:
    """Quantize decoder layer by layer straight from the checkpoint into the journal."""
    from ..loading.checkpoint import read_tensors

    n_layers = ckpt.config.text_config.num_hidden_layers
    advance = reporter.task(f"{handler.name}: decoder layers", n_layers)
    for i in range(n_layers):
        if not journal.has(layer_unit(i)):
            done: set[str] = set()
            tensors = dict(_emit(read_tensors(ckpt, _layer_names(ckpt, i)), plan.names(), handler, done))
            journal.save(layer_unit(i), tensors, {}, {}, sorted(done))
            del tensors
            release_freed_memory()
        advance()
    reporter.done()
