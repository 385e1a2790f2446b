"""`pixtral-quant convert`: parse options, build the Recipe, delegate to pixtral_quant.convert, print the summary."""

from __future__ import annotations

import click

from ..config import Gguf, GptqMixed, scheme_choices
from ..export.gguf.ftypes import MMPROJ_TYPES
from .group import main

# --imatrix → the recipe fields it sets (GGUF schemes): the importance matrix on or off, images kept or stripped.
IMATRIX_CHOICES = {"images": {"scheme.imatrix": True, "calibration.text_only": False},
                   "text": {"scheme.imatrix": True, "calibration.text_only": True},
                   "none": {"scheme.imatrix": False}}
# Options of one scheme family → its config class (given for another scheme, they are an error).
FAMILY_ONLY = {"--imatrix": Gguf, "--mmproj-type": Gguf, "--max-size": GptqMixed, "--fit": GptqMixed,
               "--context": GptqMixed, "--images": GptqMixed}
FAMILY_NAMES = {Gguf: ("gguf-<type>", f"gguf-{Gguf().type}"), GptqMixed: (GptqMixed.name, GptqMixed.name)}


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
def convert_cmd(model, recipe, scheme, calibration, num_samples, seed, group_size, act_order, damp, text_only, imatrix,
                mmproj_type, max_size, fit, context, images, out, overwrite, resume) -> None:
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
      pixtral-quant convert --model tiny --scheme gptq-mixed --max-size 30MB --out tiny-mixed   # per-Linear bits
      pixtral-quant convert --model /models/Pixtral-12B --scheme gptq-mixed --fit 8GiB --context 8192 --out p12-8g
    """
    from ..config import Recipe, with_overrides
    from ..convert import convert
    from ..errors import UsageError
    from ..recipes import DEFAULT_RECIPE, load_recipe
    from .convert_report import RichReporter, summary

    if recipe and scheme:
        raise UsageError("--recipe and --scheme both given", fix="pick one: a recipe, or a scheme with defaults")
    base = Recipe(scheme=scheme, name=scheme.name) if scheme else load_recipe(recipe or DEFAULT_RECIPE)
    values = {"--imatrix": imatrix, "--mmproj-type": mmproj_type, "--max-size": max_size, "--fit": fit,
              "--context": context, "--images": images}
    misplaced = [flag for flag, value in values.items() if value is not None
                 and not isinstance(base.scheme, FAMILY_ONLY[flag])]
    if misplaced:
        family, example = FAMILY_NAMES[FAMILY_ONLY[misplaced[0]]]
        raise UsageError(f"{', '.join(misplaced)} apply only to {family} schemes", where=misplaced[0],
                         fix=f"drop {', '.join(misplaced)}, or pick a scheme such as --scheme {example}")
    overrides = {"calibration.set": calibration, "calibration.num_samples": num_samples, "calibration.seed": seed,
                 "scheme.group_size": group_size, "scheme.desc_act": act_order, "scheme.damp_percent": damp,
                 "calibration.text_only": text_only, "scheme.mmproj_type": mmproj_type,
                 **(IMATRIX_CHOICES[imatrix] if imatrix else {})}
    final = with_overrides(base, {k: v for k, v in overrides.items() if v is not None})
    if max_size is not None or fit is not None:  # a budget on the command line replaces the recipe's
        final = with_overrides(final, {"scheme.max_size": max_size, "scheme.fit": fit}, clear=True)
    if context is not None or images is not None:
        final = with_overrides(final, {"scheme.context": context, "scheme.images": images})
    reporter = RichReporter()
    result = convert(model, final, out, overwrite=overwrite, resume=resume, reporter=reporter)
    reporter.console.print(summary(result, final))
