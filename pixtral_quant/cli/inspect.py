"""`pixtral-quant inspect PATH`: format, architecture, sizes and tokenizer of a Pixtral model."""

from __future__ import annotations

import json

import click

from ..memory.units import count, file_bytes
from .group import main

COMPONENT_LABELS = {"vision_tower": "vision tower", "projector": "projector", "embeddings": "embeddings",
                    "decoder_linears": "decoder linears", "norms": "norms", "lm_head": "lm_head",
                    "text": "text (embeddings + decoder + norms + lm_head)", "total": "total"}


@main.command("inspect")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of tables.")
def inspect_cmd(path: str, as_json: bool) -> None:
    """Describe a Pixtral model: format and tensor layout, text and vision architecture, parameters and
    bytes per component and per dtype, and the tokenizer file found.

    PATH is a model directory (Hugging Face config.json or Mistral params.json), a hub id (org/name,
    only its configs and tokenizer are fetched), or a shipped name: tiny, pixtral-12b, pixtral-12b-native,
    pixtral-large. A directory with only a config is enough; bytes then follow the config's dtype.

    \b
    Examples:
      pixtral-quant inspect tiny
      pixtral-quant inspect pixtral-large --json
      pixtral-quant inspect /models/Pixtral-12B-2409
      pixtral-quant inspect mistral-community/pixtral-12b
    """
    from ..loading import describe

    report = describe(path)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _render(report)


def _render(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    tok = report["tokenizer"]
    console.print(f"[bold]{report['source']}[/bold]  ({report['path']})")
    console.print(f"format: {report['format']} — {report['layout_description']}; "
                  f"{len(report['weight_files'])} weight file(s)")
    console.print(f"tokenizer: {tok['file'] + ' (' + tok['kind'] + ')' if tok else 'none found'}")
    arch = Table("", "text", "vision", title="architecture")
    for key in dict.fromkeys([*report["text"], *report["vision"]]):
        arch.add_row(key, _fmt(report["text"].get(key)), _fmt(report["vision"].get(key)))
    console.print(arch)
    sizes = Table("component", "parameters", "bytes", title=f"sizes (bytes from {report['dtype_source']})")
    for key, label in COMPONENT_LABELS.items():
        sizes.add_row(label, count(report["params"][key]), file_bytes(report["bytes"][key]))
    console.print(sizes)
    dtypes = Table("dtype", "stored elements", "bytes", title="per dtype")
    for dtype, row in report["by_dtype"].items():
        dtypes.add_row(dtype, count(row["elements"]), file_bytes(row["bytes"]))
    console.print(dtypes)


def _fmt(value) -> str:
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
