"""The one sequential calibration loop through the full multimodal model, for every algorithm that needs the
activations (GPTQ: pipeline/gptq.py, gptq-mixed: mixed/calibrate.py, the GGUF importance matrix:
export/gguf/calibrate.py). The anchor is llm-compressor's sequential pipeline: one layer loop, the per-layer work
handed to the algorithm.

run_sequential: a scratch folder for spilled activations → the vision pass (capture.capture_inputs: embeddings +
vision tower + projector, decoder layer 0's inputs into the activation store) → each decoder layer in turn, read
from the checkpoint onto the compute device, handed to the algorithm (which runs every sample through it, so the
store then holds the next layer's inputs) and dropped → the algorithm's finish (the lm_head, solved in row blocks
by `solve_head`) → the scratch folder removed, whatever happened. Only one decoder layer is on the device at a
time; the capture primitives (load_layer, calibrate_layer, ...) are capture.py's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import capture
from .runtime import Reporter, release_freed_memory


@dataclass
class Run:
    """What the loop hands the algorithm. store: the activations (after the vision pass: the current layer's
    inputs, [1, T, hidden] per sample); kwargs: the per-sample keyword arguments of the decoder layers (CPU);
    stats: capture.CaptureStats of the vision pass; text_config: the shell's (it carries the attention
    implementation transformers picked); scratch: the folder the store spills into (removed at the end)."""

    ckpt: object
    store: capture.ActivationStore
    device: torch.device
    dtype: torch.dtype
    reporter: Reporter
    scratch: Path
    kwargs: list[dict] = field(default_factory=list)
    stats: capture.CaptureStats | None = None
    text_config: object = None


class Algorithm:
    """The per-layer work of one sequential run. Subclasses override `layer` and `finish`; the rest defaults to
    "nothing to skip, nothing to prepare".

    label: prefix of the vision pass's progress bar. thread_warning: log a warning when MKL's float sums depend
    on the thread count in this process (they reach the output's bytes)."""

    label = ""
    thread_warning = True

    def begin(self, run: Run) -> None:
        """Before the vision pass (run.store is empty, run.scratch exists)."""

    def done_from(self, i: int) -> bool:
        """True when nothing from decoder layer i on is left to do (an interrupted run finished it): the loop
        stops before reading layer i."""
        return False

    def layer(self, i: int, layer: torch.nn.Module, raw: dict[str, torch.Tensor], run: Run) -> None:
        """Decoder layer i (`layer` on run.device in run.dtype; `raw`: its tensors as stored, names relative to
        the layer). Must leave in run.store the layer's outputs for every sample (the next layer's inputs)."""
        raise NotImplementedError

    def finish(self, run: Run) -> None:
        """After the last decoder layer (run.store: its outputs), before the scratch folder is removed."""


def run_sequential(ckpt, samples, tokenizer, algorithm: Algorithm, *, text_only: bool, budget_bytes: int,
                   scratch_parent: Path | None, device, dtype: torch.dtype, reporter: Reporter) -> Run:
    """`algorithm` over every decoder layer of `ckpt` on the calibration conversations `samples` (text_only:
    their images stripped first; tokenizer: calibration.dataset.open_tokenizer's). budget_bytes: activations kept
    in memory before spilling into a scratch folder under scratch_parent. Returns the Run (its stats; its store's
    spilled count — the spilled files themselves are gone)."""
    scratch = capture.scratch_dir(scratch_parent)
    try:
        run = Run(ckpt, capture.ActivationStore(budget_bytes, scratch), device, dtype, reporter, scratch)
        algorithm.begin(run)
        if algorithm.thread_warning:
            warn_thread_variant(device, reporter)
        run.kwargs, run.stats, run.text_config = first_layer_inputs(ckpt, samples, tokenizer, text_only, run.store,
                                                                    device, dtype, reporter, algorithm.label)
        for i in range(ckpt.config.text_config.num_hidden_layers):
            if algorithm.done_from(i):
                break  # nothing after this layer is left to do: its activations are not needed
            layer, raw = capture.load_layer(ckpt, run.text_config, i, device, dtype)
            algorithm.layer(i, layer, raw, run)
            del layer, raw
            release_freed_memory()
        algorithm.finish(run)
    finally:
        capture.remove_scratch(scratch)
    return run


def warn_thread_variant(device, reporter: Reporter) -> None:
    """Log that the output's bytes will depend on the thread count when MKL started before pixtral_quant was
    imported (reproducible.py) and the run computes on the CPU."""
    from ..reproducible import ENV, MODE, gemm_is_thread_invariant

    if device.type == "cpu" and not gemm_is_thread_invariant():  # MKL started before pixtral_quant was imported
        reporter.log(f"warning: MKL's float sums depend on the thread count in this process, so the checkpoint's "
                     f"bytes will too; set {ENV}={MODE} before starting Python (pixtral_quant/reproducible.py)")


def first_layer_inputs(ckpt, samples, tokenizer, text_only: bool, store: capture.ActivationStore, device, dtype,
                       reporter: Reporter, label: str = ""):
    """Every calibration sample (images stripped with text_only) through embeddings + vision tower + projector
    (capture.capture_inputs): decoder layer 0's inputs into `store`. Returns (the per-sample keyword arguments of
    the decoder layers, capture.CaptureStats, the shell's text config). The shell is dropped on return: only one
    decoder layer is on the device from then on."""
    shell = capture.load_shell(ckpt, device, dtype)
    conversations = (capture.strip_images(m) if text_only else m for m in samples)
    kwargs, stats = capture.capture_inputs(shell, conversations, tokenizer, device, store,
                                           reporter.task(f"{label}vision tower + projector", len(samples)))
    reporter.done()
    return kwargs, stats, shell.config.text_config


def solve_head(run: Run, make_solver) -> tuple[dict[str, torch.Tensor], object]:
    """The lm_head solved on the last layer's outputs (capture.calibrate_head) in row blocks of
    capture.HEAD_ROW_BLOCK (the solver has adopt / join: schemes/gptq.GptqSolver, mixed/sensitivity.MixedSolver),
    one progress bar. Returns the solver's (tensors, loss) for the whole head."""
    tensors, loss = capture.calibrate_head(run.ckpt, make_solver, run.store, run.device, run.dtype,
                                           run.reporter.task("lm_head", len(run.store)), capture.HEAD_ROW_BLOCK)
    run.reporter.done()
    return tensors, loss
