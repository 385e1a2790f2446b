"""`pixtral-quant convert`: parse options, build the Recipe, delegate to pixtral_quant.convert, print the summary."""

from __future__ import annotations

import click

from ..config import Gguf, scheme_choices
from ..export.gguf.ftypes import MMPROJ_TYPES
from . import main

# --imatrix → the recipe fields it sets (GGUF schemes): the importance matrix on or off, images kept or stripped.
IMATRIX_CHOICES = {"images": {"scheme.imatrix": True, "calibration.text_only": False},
                   "text": {"scheme.imatrix": True, "calibration.text_only": True},
                   "none": {"scheme.imatrix": False}}
GGUF_ONLY = ("--imatrix", "--mmproj-type")


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
@click.option("--out", default="out", show_default=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--overwrite", is_flag=True,
              help="Replace a non-empty output directory (atomically: the old one stays until the new one is done).")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted conversion (OUT.partial) from its last finished layer; same options.")
def convert_cmd(model, recipe, scheme, calibration, num_samples, seed, group_size, act_order, damp, text_only, imatrix,
                mmproj_type, out, overwrite, resume) -> None:
    """Quantize a Pixtral model into a standard checkpoint (GPTQ v1 or bitsandbytes) in OUT, or into llama.cpp
    GGUF files (text model + mmproj + importance matrix) with a gguf-<type> scheme.

    \b
    Examples:
      pixtral-quant convert                                   # tiny model, default recipe, into ./out/
      pixtral-quant convert --model tiny --scheme rtn-int4 --out out-rtn
      pixtral-quant convert --model /models/Pixtral-12B --recipe pixtral-12b-int4 --out pixtral-12b-w4
      pixtral-quant convert --model tiny --recipe tiny-gptq-int4 --num-samples 32 --out o --overwrite
      pixtral-quant convert --model /models/Pixtral-Large --recipe pixtral-large-int4 --out large-w4 --resume
      pixtral-quant convert --model tiny --scheme gguf-q4_k_m --out tiny-gguf        # llama.cpp / Ollama files
      pixtral-quant convert --model /models/Pixtral-12B --recipe pixtral-12b-gguf-q4_k_m --out p12-gguf
    """
    from ..config import Gguf, Recipe, with_overrides
    from ..convert import convert
    from ..errors import UsageError
    from ..recipes import DEFAULT_RECIPE, load_recipe
    from .convert_report import RichReporter, summary

    if recipe and scheme:
        raise UsageError("--recipe and --scheme both given", fix="pick one: a recipe, or a scheme with defaults")
    base = Recipe(scheme=scheme, name=scheme.name) if scheme else load_recipe(recipe or DEFAULT_RECIPE)
    given = [flag for flag, value in zip(GGUF_ONLY, (imatrix, mmproj_type)) if value is not None]
    if given and not isinstance(base.scheme, Gguf):
        raise UsageError(f"{', '.join(given)} apply only to gguf-<type> schemes", where=given[0],
                         fix=f"drop {', '.join(given)}, or pick a scheme such as --scheme gguf-q4_k_m")
    overrides = {"calibration.set": calibration, "calibration.num_samples": num_samples, "calibration.seed": seed,
                 "scheme.group_size": group_size, "scheme.desc_act": act_order, "scheme.damp_percent": damp,
                 "calibration.text_only": text_only, "scheme.mmproj_type": mmproj_type,
                 **(IMATRIX_CHOICES[imatrix] if imatrix else {})}
    final = with_overrides(base, {k: v for k, v in overrides.items() if v is not None})
    reporter = RichReporter()
    result = convert(model, final, out, overwrite=overwrite, resume=resume, reporter=reporter)
    reporter.console.print(summary(result, final))
