"""`convert`: model + recipe → quantized checkpoint in OUT (written to OUT.partial, swapped in at the end).

    from pixtral_quant.convert import convert
    from pixtral_quant.recipes import load_recipe
    result = convert("tiny", load_recipe("tiny-gptq-int4"), "out/")

Order (bad input fails before anything is written): output dir check → open the checkpoint → scheme library
present → plan → calibration set → free disk → each decoder layer (data-free schemes: straight from the
checkpoint; calibrated schemes: capture.py's sequential loop, then the lm_head) into the resume journal
(export/journal.py) as soon as it is done → shards streamed from the journal → config, side files, manifest →
atomic swap into OUT (export/atomic.py). A run killed at any point resumes from its last finished layer
(`resume=True`, `--resume`) and writes the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import errno
import functools
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import capture
from .errors import InputError, PixtralQuantError
from .export import atomic, checkpoint, manifest
from .export.journal import DIR as journal_dir
from .export.journal import HEAD_UNIT, Journal, layer_unit
from .plan import Plan, make_plan, render
from .schemes.registry import handler_for

GIB = 2**30


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None (looked up once: find_library runs `ldconfig -p`)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    return getattr(libc, "malloc_trim", None)


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc's malloc_trim; a no-op elsewhere). Why: glibc raises its mmap
    threshold after large frees, so a layer's tensors land on the brk heap and their freed pages stay resident;
    without this, peak RSS grew with depth (2 vs 8 layers: +30 %) although live memory did not."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class Reporter:
    """Progress sink. The CLI's shows rich bars; this one stays silent."""

    def log(self, message) -> None:
        """A line (or rich renderable) for the user."""

    def task(self, description: str, total: int) -> Callable[[], None]:
        """Start a bar; returns the function that advances it by one."""
        return lambda: None

    def done(self) -> None:
        """Close the current bar."""


@dataclass
class ConvertResult:
    out: Path
    plan: Plan
    layer_loss: dict[str, float] = field(default_factory=dict)
    bytes_before: int = 0
    bytes_after: int = 0
    seconds: float = 0.0
    stats: capture.CaptureStats | None = None
    calibration_hash: str | None = None
    spilled: int = 0


def compute_setup() -> tuple[torch.device, torch.dtype]:
    """cuda + bf16 when a GPU is there; else cpu + float32 (bf16 matmuls are slow on most CPUs; the weights
    keep their bf16 values either way)."""
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16
    return torch.device("cpu"), torch.float32


# handler.exporter → "module:function" writing the output (lazy: the GGUF one needs the `gguf` package).
# Each takes (ckpt, recipe, handler, out, resume, reporter) and returns a ConvertResult once OUT is in place.
EXPORTERS = {"checkpoint": "pixtral_quant.convert:export_checkpoint",
             "gguf": "pixtral_quant.export.gguf.export:export_gguf",
             "mixed": "pixtral_quant.export.mixed:export_mixed"}


def convert(model: str | Path, recipe, out: str | Path, *, overwrite: bool = False, resume: bool = False,
            reporter: Reporter | None = None) -> ConvertResult:
    """Quantize `model` (path, shipped name or hub id) with `recipe` into `out`. See module docstring.
    resume: continue the interrupted conversion in OUT.partial (same model, recipe and options) from its last
    finished unit; the files are byte-identical to an uninterrupted run's."""
    import importlib

    from .loading import open_checkpoint

    reporter = reporter or Reporter()
    out = Path(out)
    atomic.check_out_dir(out, overwrite, resume, marker=journal_dir)
    ckpt = open_checkpoint(model, require_weights=True)  # bad paths fail here, before the scheme library loads
    handler = handler_for(recipe.scheme)
    handler.require()
    module, _, function = EXPORTERS[handler.exporter].partition(":")
    start = time.perf_counter()
    result = getattr(importlib.import_module(module), function)(ckpt, recipe, handler, out, resume, reporter)
    result.out, result.seconds = out, time.perf_counter() - start
    result.bytes_before = sum(f.stat().st_size for f in ckpt.weight_files)
    return result


def export_checkpoint(ckpt, recipe, handler, out: Path, resume: bool, reporter: Reporter) -> ConvertResult:
    """The safetensors checkpoint (GPTQ v1 / bitsandbytes) through the resume journal, swapped into OUT."""
    plan = make_plan(ckpt.config, recipe)
    cset = calibration_set(recipe.calibration, ckpt) if handler.needs_calibration else None
    if not resume:
        _check_disk(out, ckpt.config, recipe)
    reporter.log(render(plan))  # after every input is checked: for bad input the error is all that is printed
    tmp = atomic.partial_dir(out, resume, keep=journal_dir)
    try:
        journal = open_journal(tmp, ckpt, recipe, cset, resume)
        result = _write(ckpt, recipe, plan, handler, cset, tmp, journal, reporter)
    except BaseException as exc:
        after_failure(exc, tmp, resume, reporter)
        raise
    atomic.commit(tmp, out, marker=journal_dir)  # the journal goes once the swap is done
    result.bytes_after = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    return result


def after_failure(exc: BaseException, tmp: Path, resume: bool, reporter: Reporter) -> None:
    """Bad input found on the way (and a full disk) leaves nothing behind, but a resumed run keeps what earlier
    runs finished; anything else (Ctrl-C, a crash, the machine running out of memory) keeps OUT.partial so that
    --resume continues from its last finished unit."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        if not resume:
            atomic.discard(tmp)
        raise InputError("no space left on the device while writing the checkpoint", where=tmp.parent,
                         fix="free disk space (see the size `pixtral-quant plan` predicts) or choose another --out"
                         ) from None
    if isinstance(exc, PixtralQuantError):
        if not resume:
            atomic.discard(tmp)
        return
    reporter.log(f"interrupted: the finished layers are kept in {tmp}; run the same command with --resume to "
                 f"continue, or delete {tmp} to start over")


def _check_disk(out: Path, config, recipe) -> None:
    """InputError when the file system of OUT has less free space than the checkpoint plus its resume journal
    (the same bytes again) need; the checkpoint size is the plan's exact prediction."""
    from .memory.checkpoint import estimate
    from .memory.inventory import inventory, model_shapes

    need = 2 * estimate(inventory(model_shapes(config), recipe), int(recipe.max_shard_gb * 1e9)).total_bytes
    check_free_disk(out, need, "the checkpoint and its resume journal")


def check_free_disk(out: Path, need: int, what: str) -> None:
    """InputError when the file system OUT will be on has fewer than `need` bytes free (`what` says for what)."""
    from .memory.units import fmt_bytes

    parent = next(p for p in out.absolute().parents if p.exists())
    free = shutil.disk_usage(parent).free
    if free < need:
        raise InputError(f"not enough free disk space: {fmt_bytes(free)} free, the conversion needs "
                         f"{fmt_bytes(need)} ({what})", where=parent,
                         fix="free disk space or choose an --out on a larger file system")


def open_journal(tmp: Path, ckpt, recipe, cset, resume: bool) -> Journal:
    """The resume journal of this conversion: what identifies it is the recipe, the source files and the
    calibration content."""
    fingerprint = {"recipe": recipe.to_dict(), "model": str(ckpt.source),
                   "weight_files": [[f.name, f.stat().st_size] for f in ckpt.weight_files],
                   "calibration": cset.content_hash if cset is not None else None}
    return Journal.reopen(tmp, fingerprint) if resume else Journal.start(tmp, fingerprint)


def calibration_set(calib, ckpt):
    from .calibration.dataset import load_set

    return load_set(calib.set, ckpt.tokenizer, num_samples=calib.num_samples, seed=calib.seed,
                    max_tokens=calib.max_tokens)


def _write(ckpt, recipe, plan: Plan, handler, cset, tmp: Path, journal: Journal, reporter: Reporter) -> ConvertResult:
    """Every unit of work into the journal (skipping those a previous run finished), then the shards from it."""
    result = ConvertResult(tmp, plan, calibration_hash=cset.content_hash if cset is not None else None)
    if handler.needs_calibration:
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
    manifest.write_manifest(tmp, manifest_body(ckpt, recipe, plan, result, side))
    return result


def manifest_body(ckpt, recipe, plan: Plan, result: ConvertResult, side: list[str]) -> dict:
    stats = result.stats
    return {
        "tool": "pixtral-quant convert",
        "recipe": recipe.to_dict(),
        "source": {"model": ckpt.source, "format": ckpt.format, "weight_files": [f.name for f in ckpt.weight_files]},
        "versions": manifest.versions(),
        "calibration": None if result.calibration_hash is None else {
            "set": recipe.calibration.set, "content_hash": result.calibration_hash, "samples": len(stats.tokens),
            "tokens": sum(stats.tokens), "images": sum(stats.images), "vision_images": sum(stats.vision_images),
            "text_only": recipe.calibration.text_only},
        "plan": plan.to_list(),
        "layer_loss": {k: result.layer_loss[k] for k in sorted(result.layer_loss)},
        "side_files": side,
    }




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
    from .loading.checkpoint import read_tensors

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
    from .loading.checkpoint import read_tensors

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


def calibrated_layers(ckpt, plan: Plan, handler, cset, recipe, tmp: Path, journal: Journal, reporter: Reporter,
                       result: ConvertResult) -> None:
    """capture.py's sequential loop; each finished layer (and the lm_head) goes to the journal. Layers an
    interrupted run finished are replayed from it (their saved weights, no solve) to rebuild the activations."""

    device, dtype = compute_setup()
    calib = recipe.calibration
    scratch = capture.scratch_dir(tmp)
    store = capture.ActivationStore(int(calib_budget(recipe) * GIB), scratch)
    n_layers = ckpt.config.text_config.num_hidden_layers
    units = [layer_unit(i) for i in range(n_layers)] + ([HEAD_UNIT] if capture.HEAD in plan.names() else [])
    try:
        kwargs, result.stats, text_config = first_layer_inputs(ckpt, cset, calib, store, device, dtype, reporter)
        passes = len(capture.groups_for(getattr(recipe.scheme, "true_sequential", True))) + 1
        for i in range(n_layers):
            if all(journal.has(u) for u in units[i:]):
                break  # nothing after this layer is left to solve: its activations are not needed
            if journal.has(layer_unit(i)):
                _replay(ckpt, text_config, i, handler, journal, store, kwargs, device, dtype, reporter)
            else:
                _one_layer(ckpt, text_config, i, plan, handler, store, kwargs, device, dtype, passes, reporter,
                           journal)
        if units[-1] == HEAD_UNIT and not journal.has(HEAD_UNIT):
            tensors, loss = capture.calibrate_head(ckpt, handler.solver, store, device, dtype,
                                                   reporter.task("lm_head", len(store)), capture.HEAD_ROW_BLOCK)
            reporter.done()
            journal.save(HEAD_UNIT, {f"{capture.HEAD}.{k}": v for k, v in sorted(tensors.items())}, {},
                         {capture.HEAD: loss}, [capture.HEAD])
        result.spilled = store.spilled
    finally:
        capture.remove_scratch(scratch)


def first_layer_inputs(ckpt, cset, calib, store, device, dtype, reporter: Reporter):
    """Every calibration sample (images stripped with calib.text_only) through embeddings + vision tower +
    projector (capture.capture_inputs): decoder layer 0's inputs into `store`. Returns (the per-sample keyword
    arguments of the decoder layers, capture.CaptureStats, the shell's text config). The shell is dropped on
    return: only one decoder layer is on the device from then on."""
    from .calibration.dataset import open_tokenizer
    from .reproducible import ENV, MODE, gemm_is_thread_invariant

    if device.type == "cpu" and not gemm_is_thread_invariant():  # MKL started before pixtral_quant was imported
        reporter.log(f"warning: MKL's float sums depend on the thread count in this process, so the checkpoint's "
                     f"bytes will too; set {ENV}={MODE} before starting Python (pixtral_quant/reproducible.py)")
    shell = capture.load_shell(ckpt, device, dtype)
    samples = (capture.strip_images(m) if calib.text_only else m for m in cset)
    kwargs, stats = capture.capture_inputs(shell, samples, open_tokenizer(ckpt.tokenizer), device, store,
                                           reporter.task("vision tower + projector", len(cset)))
    reporter.done()
    return kwargs, stats, shell.config.text_config


def calib_budget(recipe) -> float:
    """GiB of activations kept in CPU memory before spilling to disk."""
    return recipe.calibration.activation_budget_gib


def _one_layer(ckpt, text_config, i, plan, handler, store, kwargs, device, dtype, passes, reporter, journal):
    """Calibrate decoder layer i; its tensors (quantized Linears + the rest as stored) go to the journal."""
    prefix = f"{capture.LAYERS}{i}."
    layer, raw = capture.load_layer(ckpt, text_config, i, device, dtype)
    targets = sorted(n[len(prefix):] for n in plan.names() if n.startswith(prefix))
    advance = reporter.task(f"layer {i + 1}/{ckpt.config.text_config.num_hidden_layers}", passes * len(store))
    solved = capture.calibrate_layer(layer, targets, handler.solver, store, kwargs, device,
                                     getattr(handler.config, "true_sequential", True), advance)
    reporter.done()
    tensors, restore, losses = {}, {}, {}
    for name, (quantized, loss, kept) in sorted(solved.items()):
        raw.pop(f"{name}.weight")
        raw.pop(f"{name}.bias", None)
        losses[prefix + name] = loss
        tensors.update((f"{prefix}{name}.{k}", v) for k, v in sorted(quantized.items()))
        restore.update((f"{name}.{k}", v) for k, v in sorted(kept.items()))
    tensors.update((prefix + k, v) for k, v in sorted(raw.items()))
    journal.save(layer_unit(i), tensors, restore, losses, sorted(prefix + n for n in solved))
    del layer, tensors
    release_freed_memory()


def _replay(ckpt, text_config, i, handler, journal, store, kwargs, device, dtype, reporter) -> None:
    """Layer i as an interrupted run left it in the journal: its solved weights restored exactly, the samples
    run through it (capture.replay_layer)."""
    prefix = f"{capture.LAYERS}{i}."
    stored, restore = journal.read(layer_unit(i))
    tensors = dict(stored)
    weights = {}
    for module in sorted({k.rsplit(".", 1)[0] for k in restore}):
        stored = {k[len(prefix + module) + 1:]: v for k, v in tensors.items() if k.startswith(f"{prefix}{module}.")}
        kept = {k[len(module) + 1:]: v for k, v in restore.items() if k.startswith(f"{module}.")}
        weights[module] = handler.restore_weight(stored, kept)
    layer, _ = capture.load_layer(ckpt, text_config, i, device, dtype)
    advance = reporter.task(f"layer {i + 1}/{ckpt.config.text_config.num_hidden_layers} (resumed: replayed)",
                            len(store))
    capture.replay_layer(layer, weights, store, kwargs, device, advance)
    reporter.done()
    del layer
    release_freed_memory()
