"""`pixtral-quant convert`: parse options, delegate to pixtral_quant.api.convert (the recipe and its overrides,
then pixtral_quant.convert), print the summary."""

from __future__ import annotations

import click

from ..api import IMATRIX_CHOICES
from ..config import Gguf, scheme_choices
from ..export.gguf.ftypes import MMPROJ_TYPES
from .group import main


def _scheme(ctx, param, value):
    """A scheme name checked against config (fixed names and the gguf-<type> family); None when not given."""
    from ..config import scheme_from_dict

    return None if value is None else scheme_from_dict(value, where="--scheme")


@main.command("convert")
@click.option("--model", default="tiny", show_default=True, help="Model directory, hub id or shipped name.")
@click.option("--recipe", help="Recipe file or shipped recipe name (recipes/*.yaml).")
@click.option("--scheme", callback=_scheme, help=f"A scheme with its default settings (instead of --recipe): "
              f"{scheme_choices()} (<type>: any llama.cpp file type, e.g. {Gguf().type}).")
@click.option("--calibration", help="Calibration set: calib, tiny, a manifest .jsonl, a folder or hf:PATH.")
@click.option("--num-samples", type=click.IntRange(min=1), help="Calibration samples.")
@click.option("--seed", type=int, help="Seed of the calibration subset.")
@click.option("--group-size", type=int, help="Group size of the GPTQ/RTN schemes (-1: per channel).")
@click.option("--act-order/--no-act-order", default=None, help="GPTQ desc_act.")
@click.option("--damp", type=float, help="GPTQ dampening (fraction of the mean Hessian diagonal).")
@click.option("--text-only", is_flag=True, default=None, help="Calibrate with the images removed.")
@click.option("--imatrix", type=click.Choice(list(IMATRIX_CHOICES)),
              help="GGUF: importance matrix from the calibration set with images, with the images stripped, or none "
              "(default: the recipe's).")
@click.option("--mmproj-type", help=f"GGUF: type of the vision file, one of {', '.join(MMPROJ_TYPES)} "
              f"(default: the recipe's; {Gguf().mmproj_type}).")
@click.option("--max-size", help="gptq-mixed: the checkpoint's bytes on disk at most (6.5GB, 4GiB): the least-loss "
              "allocation within it.")
@click.option("--fit", help="gptq-mixed: the GPU memory `plan` must fit (8GiB, 24GiB): the least-loss allocation "
              "whose peak fits, for --context / --images (default: plan's workload).")
@click.option("--context", type=click.IntRange(min=1), help="gptq-mixed --fit: tokens the KV cache holds.")
@click.option("--images", type=click.IntRange(min=0), help="gptq-mixed --fit: images in the prompt.")
@click.option("--out", default="out", show_default=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--overwrite", is_flag=True,
              help="Replace a non-empty output directory (atomically: the old one stays until the new one is done).")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted conversion (OUT.partial) from its last finished layer; same options.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout (instead of the table).")
def convert_cmd(model, recipe, scheme, calibration, num_samples, seed, group_size, act_order, damp, text_only, imatrix,
                mmproj_type, max_size, fit, context, images, out, overwrite, resume, as_json) -> None:
    """Quantize a Pixtral model into a standard checkpoint (GPTQ v1 or bitsandbytes) in OUT, or into llama.cpp
    GGUF files (text model + mmproj + importance matrix) with a gguf-<type> scheme. The plan and the progress go
    to stderr (plain lines with ETA when it is not a terminal), the result table (or --json) to stdout.

    \b
    Examples:
      pixtral-quant convert                                   # tiny model, default recipe, into ./out/
      pixtral-quant convert --model tiny --scheme rtn-int4 --out out-rtn
      pixtral-quant convert --model /models/Pixtral-12B --recipe pixtral-12b-int4 --out pixtral-12b-w4
      pixtral-quant convert --model tiny --recipe tiny-gptq-int4 --num-samples 32 --out o --overwrite
      pixtral-quant convert --model /models/Pixtral-Large --recipe pixtral-large-int4 --out large-w4 --resume
      pixtral-quant convert --model tiny --scheme gguf-q4_k_m --out tiny-gguf        # llama.cpp / Ollama files
      pixtral-quant convert --model /models/Pixtral-12B --recipe pixtral-12b-gguf-q4_k_m --out p12-gguf
      pixtral-quant convert --model tiny --scheme gptq-mixed --max-size 37.5MB --out tiny-mixed # per-Linear bits
      pixtral-quant convert --model /models/Pixtral-12B --scheme gptq-mixed --fit 8GiB --context 8192 --out p12-8g
    """
    import json

    from rich.console import Console

    from ..api import convert
    from .convert_report import RichReporter, result_dict, summary

    reporter = RichReporter()
    result = convert(model, recipe, scheme, out=out, overwrite=overwrite, resume=resume, reporter=reporter,
                     calibration=calibration, num_samples=num_samples, seed=seed, group_size=group_size,
                     act_order=act_order, damp=damp, text_only=text_only, imatrix=imatrix, mmproj_type=mmproj_type,
                     max_size=max_size, fit=fit, context=context, images=images)
    # the result on stdout, progress and the plan on stderr (every command: results out, the run's log err)
    if as_json:
        click.echo(json.dumps(result_dict(result), indent=2))
    else:
        Console().print(summary(result, result.recipe))
