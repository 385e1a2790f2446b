"""`pixtral-quant calib ...`: look at calibration and evaluation sets. Parses options, delegates to
pixtral_quant.calibration.dataset.load_set, prints calibration.stats."""

from __future__ import annotations

import json

import click

from .group import main

SET_HELP = """SET is a built-in set (calib, eval), a manifest .jsonl, a folder (manifest.jsonl, or images plus
captions.tsv/.csv/.jsonl), or hf:PATH for a `datasets` dataset saved to disk."""


@main.group("calib")
def calib() -> None:
    """Calibration and evaluation sets: built-in, JSONL manifests, image folders, saved datasets."""


@calib.command("inspect", epilog=SET_HELP)
@click.argument("set_spec", metavar="SET")
@click.option("--tokenizer", default="tekken", show_default=True,
              help="tekken (Pixtral-12B), v7m1 (Pixtral Large), a tokenizer file or a model directory.")
@click.option("--num-samples", type=click.IntRange(min=1), help="Deterministic subset of N samples.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the subset.")
@click.option("--max-tokens", type=click.IntRange(min=1), help="Per-sample limit: downsize images, else drop.")
@click.option("--image-column", help="hf: image column.")
@click.option("--text-column", help="hf: reference-answer (caption) column.")
@click.option("--prompt-column", help="hf: question column (default prompt: 'Describe this image.').")
@click.option("--split", help="hf: split of a DatasetDict.")
@click.option("--captions", type=click.Path(dir_okay=False), help="Captions file of an image folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
def inspect_set(set_spec: str, tokenizer: str, num_samples, seed: int, max_tokens, image_column, text_column,
                prompt_column, split, captions, as_json: bool) -> None:
    """Count samples, images per sample, image sizes and tokens (text vs image) of SET.

    \b
    Examples:
      pixtral-quant calib inspect calib
      pixtral-quant calib inspect eval --tokenizer v7m1 --json
      pixtral-quant calib inspect data/manifest.jsonl --num-samples 128 --seed 1 --max-tokens 4096
      pixtral-quant calib inspect hf:./my_ds --image-column image --text-column caption
    """
    from ..calibration.dataset import load_set
    from ..calibration.stats import to_dict, to_rich

    cset = load_set(set_spec, tokenizer, num_samples=num_samples, seed=seed, max_tokens=max_tokens,
                    image_column=image_column, text_column=text_column, prompt_column=prompt_column,
                    split=split, captions=captions, progress=not as_json)
    if as_json:
        click.echo(json.dumps(to_dict(cset.stats), indent=2))
        return
    from rich.console import Console

    console = Console()
    for renderable in to_rich(cset.stats):
        console.print(renderable)
        console.print()
