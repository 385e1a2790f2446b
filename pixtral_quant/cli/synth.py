"""`pixtral-quant synth`: write a random-weight checkpoint at a config's real shapes (parse + delegate)."""

from __future__ import annotations

import json

import click

from ..config import MAX_SHARD_GB
from ..memory.units import GIB
from .group import main


@main.command("synth")
@click.option("--config", "config_src", required=True,
              help="Shipped name (pixtral-12b, pixtral-large, tiny), model directory, config.json or params.json.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="New or empty output directory.")
@click.option("--layers", type=int, help="Decoder layers (default: the config's); the width stays.")
@click.option("--format", "fmt", type=click.Choice(["hf", "native"]), default="hf", show_default=True,
              help="Hugging Face (config.json, model-*.safetensors) or Mistral-native (params.json, consolidated*).")
@click.option("--outliers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Input columns per decoder Linear scaled 20-100x (stresses group-wise quantizers like real LLMs).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every tensor (with its name).")
@click.option("--shard-gb", type=click.FloatRange(min=0, min_open=True), default=MAX_SHARD_GB,
              show_default=True, help="Largest shard in GB (1e9 bytes, as a recipe's max_shard_gb).")
@click.option("--device", default="cpu", show_default=True, help="Where values are drawn (cuda is much faster).")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def synth_cmd(config_src, out, layers, fmt, outliers, seed, shard_gb, device, as_json) -> None:
    """Write a synthetic Pixtral checkpoint: random weights (N(0, 0.02²), norms 1) at the real shapes of CONFIG,
    streamed one tensor at a time into shards (memory stays at one tensor whatever the model size), with the
    config and a real tokenizer, loadable by pixtral-quant and transformers. For scale and memory tests only.

    \b
    Examples:
      pixtral-quant synth --config pixtral-12b --out /data/synth-12b
      pixtral-quant synth --config pixtral-large --layers 4 --out /data/large-4of88
      pixtral-quant synth --config tiny --format native --outliers 4 --out /tmp/tiny-native
    """
    from ..synth import Outliers, synthesize

    result = synthesize(config_src, out, layers=layers, fmt=fmt, seed=seed,
                        outliers=Outliers(outliers) if outliers else None,
                        max_shard_bytes=int(shard_gb * 1e9), device=device)
    summary = {"out": str(result.out), "format": result.format, "files": result.files, "layers": result.layers,
               "params": result.params, "tensor_bytes": result.tensor_bytes, "seconds": round(result.seconds, 2)}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(f"wrote {result.params / 1e9:.3f} B parameters ({result.tensor_bytes / GIB:.2f} GiB, "
                   f"{result.layers} decoder layers) in {len(result.files)} file(s) to {result.out} "
                   f"in {result.seconds:.1f} s")
