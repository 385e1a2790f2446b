"""`convert`: model + recipe → quantized checkpoint in OUT (written to OUT.partial, swapped in at the end).

    from pixtral_quant.convert import convert
    from pixtral_quant.recipes import load_recipe
    result = convert("tiny", load_recipe("tiny-gptq-int4"), "out/")

Here: the checks every scheme shares and the dispatch. Order (bad input fails before anything is written): output
dir check → open the checkpoint → scheme library present → the scheme's exporter (EXPORTERS), which plans, checks
the rest of its inputs and the free disk, and writes OUT in one output run (export/output.py): the uniform
checkpoint (export/uniform.py, through the resume journal: `resume=True`, `--resume`), gptq-mixed
(export/mixed.py) or the GGUF files (export/gguf/export.py). The calibration loop they share is
pipeline/sequential.py.
"""

from __future__ import annotations

import time
from pathlib import Path

from .export import atomic
from .export.journal import DIR as journal_dir
from .pipeline.runtime import ConvertResult, Reporter
from .schemes.registry import handler_for

# handler.exporter → "module:function" writing the output (lazy: the GGUF one needs the `gguf` package).
# Each takes (ckpt, recipe, handler, out, resume, reporter) and returns a ConvertResult once OUT is in place.
EXPORTERS = {"checkpoint": "pixtral_quant.export.uniform:export_checkpoint",
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
    result.out, result.seconds, result.recipe = out, time.perf_counter() - start, recipe
    result.bytes_before = sum(f.stat().st_size for f in ckpt.weight_files)
    return result
