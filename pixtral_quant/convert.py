"""`convert`: model + recipe → quantized checkpoint in OUT (written to OUT.partial, renamed at the end).

    from pixtral_quant.convert import convert
    from pixtral_quant.recipes import load_recipe
    result = convert("tiny", load_recipe("tiny-gptq-int4"), "out/")

Order (bad input fails before anything is written): output dir check → scheme library present → open the
checkpoint → plan → calibration set → tensors streamed shard by shard (data-free schemes: layer by layer from
the checkpoint; calibrated schemes: capture.py's sequential loop) → config, side files, manifest → rename.
"""

from __future__ import annotations

import functools
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import capture
from .export import atomic, checkpoint, manifest
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


def convert(model: str | Path, recipe, out: str | Path, *, overwrite: bool = False,
            reporter: Reporter | None = None) -> ConvertResult:
    """Quantize `model` (path, shipped name or hub id) with `recipe` into `out`. See module docstring."""
    from .loading import open_checkpoint

    reporter = reporter or Reporter()
    out = Path(out)
    atomic.check_out_dir(out, overwrite)
    handler = handler_for(recipe.scheme)
    handler.require()
    ckpt = open_checkpoint(model)
    plan = make_plan(ckpt.config, recipe)
    reporter.log(render(plan))
    cset = _calibration(recipe.calibration, ckpt) if handler.needs_calibration else None
    start = time.perf_counter()
    tmp = atomic.partial_dir(out)
    try:
        result = _write(ckpt, recipe, plan, handler, cset, tmp, reporter)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic.commit(tmp, out)
    result.out, result.seconds = out, time.perf_counter() - start
    result.bytes_before = sum(f.stat().st_size for f in ckpt.weight_files)
    result.bytes_after = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    return result


def _calibration(calib, ckpt):
    from .calibration.dataset import load_set

    return load_set(calib.set, ckpt.tokenizer, num_samples=calib.num_samples, seed=calib.seed,
                    max_tokens=calib.max_tokens)


def _write(ckpt, recipe, plan: Plan, handler, cset, tmp: Path, reporter: Reporter) -> ConvertResult:
    result = ConvertResult(tmp, plan, calibration_hash=cset.content_hash if cset is not None else None)
    done: set[str] = set()
    items = _tensors(ckpt, plan, handler, cset, recipe, tmp, reporter, result, done)
    checkpoint.write_tensors(items, tmp, int(recipe.max_shard_gb * 1e9))
    plan.check_done(done)
    checkpoint.write_config(ckpt.config, handler.quantization_config(plan), tmp)
    side = checkpoint.copy_side_files(ckpt.path, tmp, ckpt.config)
    manifest.write_manifest(tmp, _manifest_body(ckpt, recipe, plan, result, side))
    return result


def _manifest_body(ckpt, recipe, plan: Plan, result: ConvertResult, side: list[str]) -> dict:
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


def _tensors(ckpt, plan, handler, cset, recipe, tmp, reporter, result, done) -> Iterator[tuple[str, torch.Tensor]]:
    """Every output tensor (runtime names): the non-decoder tensors, then decoder layer by layer."""
    from .loading.checkpoint import read_tensors

    # A calibrated lm_head waits for the decoder's outputs: it is solved and written after the last layer.
    late = {f"{capture.HEAD}.weight"} if handler.needs_calibration and capture.HEAD in plan.names() else set()
    outside = sorted(n for n in ckpt.tensors if not n.startswith(capture.LAYERS) and n not in late)
    yield from _emit(read_tensors(ckpt, outside), plan.names(), handler, done)
    n_layers = ckpt.config.text_config.num_hidden_layers
    if handler.needs_calibration:
        yield from _calibrated_layers(ckpt, plan, handler, cset, recipe, tmp, reporter, result, done)
        return
    advance = reporter.task(f"{handler.name}: decoder layers", n_layers)
    for i in range(n_layers):
        prefix = f"{capture.LAYERS}{i}."
        yield from _emit(read_tensors(ckpt, sorted(n for n in ckpt.tensors if n.startswith(prefix))),
                         plan.names(), handler, done)
        release_freed_memory()
        advance()
    reporter.done()


def _emit(raw: dict[str, torch.Tensor], targets: set[str], handler, done: set[str]):
    """raw tensors (runtime names) with every planned module's weight (+bias) replaced by the handler's tensors."""
    modules = sorted({n.rsplit(".", 1)[0] for n in raw} & targets)
    for module in modules:
        quantized = handler.quantize(module, raw.pop(f"{module}.weight"), raw.pop(f"{module}.bias", None))
        done.add(module)
        yield from ((f"{module}.{k}", v) for k, v in sorted(quantized.items()))
    yield from sorted(raw.items())


def _calibrated_layers(ckpt, plan, handler, cset, recipe, tmp, reporter, result, done):
    """capture.py's sequential loop; yields each layer's tensors as soon as the layer is done."""
    from .calibration.dataset import open_tokenizer

    device, dtype = compute_setup()
    calib = recipe.calibration
    scratch = capture.scratch_dir(tmp)
    store = capture.ActivationStore(int(calib_budget(recipe) * GIB), scratch)
    try:
        shell = capture.load_shell(ckpt, device, dtype)
        samples = (capture.strip_images(m) if calib.text_only else m for m in cset)
        kwargs, result.stats = capture.capture_inputs(shell, samples, open_tokenizer(ckpt.tokenizer), device, store,
                                                      reporter.task("vision tower + projector", len(cset)))
        reporter.done()
        text_config = shell.config.text_config
        del shell  # embeddings, vision tower and projector are done: only one decoder layer on the device now
        passes = len(capture.groups_for(getattr(recipe.scheme, "true_sequential", True))) + 1
        for i in range(ckpt.config.text_config.num_hidden_layers):
            yield from _one_layer(ckpt, text_config, i, plan, handler, store, kwargs, device, dtype, passes,
                                  reporter, result, done)
        if capture.HEAD in plan.names():
            tensors, result.layer_loss[capture.HEAD] = capture.calibrate_head(
                ckpt, handler.solver, store, device, dtype, reporter.task("lm_head", len(store)))
            reporter.done()
            done.add(capture.HEAD)
            yield from ((f"{capture.HEAD}.{k}", v) for k, v in sorted(tensors.items()))
        result.spilled = store.spilled
    finally:
        capture.remove_scratch(scratch)


def calib_budget(recipe) -> float:
    """GiB of activations kept in CPU memory before spilling to disk."""
    return recipe.calibration.activation_budget_gib


def _one_layer(ckpt, text_config, i, plan, handler, store, kwargs, device, dtype, passes, reporter, result, done):
    """Calibrate decoder layer i and yield its tensors (quantized Linears + the rest as stored)."""
    prefix = f"{capture.LAYERS}{i}."
    layer, raw = capture.load_layer(ckpt, text_config, i, device, dtype)
    targets = sorted(n[len(prefix):] for n in plan.names() if n.startswith(prefix))
    advance = reporter.task(f"layer {i + 1}/{ckpt.config.text_config.num_hidden_layers}", passes * len(store))
    solved = capture.calibrate_layer(layer, targets, handler.solver, store, kwargs, device,
                                     getattr(handler.config, "true_sequential", True), advance)
    reporter.done()
    for name, (tensors, loss) in sorted(solved.items()):
        raw.pop(f"{name}.weight")
        raw.pop(f"{name}.bias", None)
        result.layer_loss[prefix + name] = loss
        done.add(prefix + name)
        yield from ((f"{prefix}{name}.{k}", v) for k, v in sorted(tensors.items()))
    yield from ((prefix + k, v) for k, v in sorted(raw.items()))
    del layer
    release_freed_memory()
