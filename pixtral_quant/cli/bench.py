"""`pixtral-quant bench CHECKPOINT`: prefill time with an image, decode tok/s, peak memory (parse + delegate)."""

from __future__ import annotations

import json

import click

from .group import main
from .plan import _image_size


def _device(ctx, param, value):
    """The --device string, refused here (not deep in torch) when torch does not know it or it has no GPU."""
    if value is None:
        return None
    import torch

    from ..errors import UsageError

    try:
        device = torch.device(value)
    except RuntimeError:
        raise UsageError(f"{value!r} is not a device torch knows", where="--device",
                         fix="use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("no CUDA GPU is visible on this machine", where=f"--device {value}",
                         fix="use --device cpu, or run where `nvidia-smi` lists a GPU")
    return value


@main.command("bench")
@click.argument("checkpoints", nargs=-1, required=True)
@click.option("--device", callback=_device, help="cuda, cuda:N or cpu (default: cuda when there is one).")
@click.option("--dtype", type=click.Choice(["bfloat16", "float16", "float32"]), default="bfloat16", show_default=True)
@click.option("--image-size", callback=_image_size, help="WIDTHxHEIGHT of the image (default 1024x1024).")
@click.option("--images", type=click.IntRange(min=1), help="Images in the prompt (default 1).")
@click.option("--text-tokens", type=click.IntRange(min=1), help="Prompt text tokens (default 1024).")
@click.option("--new-tokens", type=click.IntRange(min=2), help="Generated tokens (default 128).")
@click.option("--repeats", type=click.IntRange(min=1), help="Timed runs per checkpoint after the warm-up; the "
              "medians are reported (default 3).")
@click.option("--embeddings", type=click.Choice(["gpu", "cpu"]), default="gpu", show_default=True,
              help="Run the embedding lookup on the CPU (cpu) or the device.")
@click.option("--vision", type=click.Choice(["gpu", "offload"]), default="gpu", show_default=True,
              help="Keep vision tower + projector in CPU memory between images (offload).")
@click.option("--lm-head-on", type=click.Choice(["gpu", "cpu"]), default="gpu", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (a list for several checkpoints).")
def bench_cmd(checkpoints, device, dtype, image_size, images, text_tokens, new_tokens, repeats, embeddings, vision,
              lm_head_on, as_json) -> None:
    """Load each CHECKPOINT (a directory transformers loads: quantized or not) and time one generation: prefill
    of an image + text prompt (synthetic pixels and ids), decode tokens per second, peak memory (GPU allocated, or
    process RSS on the CPU); a warm-up generation first, then the medians of --repeats runs. Several checkpoints
    are timed one after another in this process and shown side by side, with ratios to the first (as llama-bench
    compares models).

    \b
    Examples:
      pixtral-quant bench out/                                         # what `convert` wrote
      pixtral-quant bench tiny out-w4 out-w8 --device cpu --image-size 256x256 --text-tokens 64 --new-tokens 16
      pixtral-quant bench /data/pixtral-12b-w4 --embeddings cpu --vision offload --repeats 5 --json
    """
    from ..bench import DEFAULT_WORKLOAD, bench, with_workload
    from ..config import BENCH_REPEATS
    from ..loading import check_saved
    from ..memory.settings import Placement

    # a wrong path or damaged file: one message, before transformers loads anything
    paths = [check_saved(c) for c in checkpoints]
    workload = with_workload(DEFAULT_WORKLOAD, images=images, text_tokens=text_tokens, new_tokens=new_tokens,
                             image_width=image_size[0] if image_size else None,
                             image_height=image_size[1] if image_size else None)
    placement = Placement(embeddings=embeddings, vision=vision, lm_head=lm_head_on)
    results = [bench(p, device=device, dtype=dtype, workload=workload, placement=placement,
                     repeats=repeats or BENCH_REPEATS) for p in paths]
    if as_json:
        click.echo(json.dumps(results[0] if len(results) == 1 else results, indent=2))
    else:
        _render(results)


def _render(results: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..memory.units import fmt_bytes

    first = results[0]
    table = Table("", *(r["checkpoint"] for r in results),
                  title=f"bench on {first['gpu'] or first['device']}: medians of {first['repeats']} runs after a "
                        "warm-up")
    rows = [("quantization / kernel", lambda r: f"{r['quantization'] or 'none'} / {r['kernel']}"),
            ("placement", lambda r: ", ".join(r["placement"]) or "all on the device"),
            ("prompt", lambda r: f"{r['prompt_tokens']} tokens"), ("load", lambda r: f"{r['load_seconds']:.2f} s"),
            ("prefill", lambda r: f"{r['prefill_seconds']:.3f} s ({r['prefill_tokens_per_second']:.0f} tok/s)"),
            ("decode", lambda r: f"{r['decode_tokens_per_second']:.1f} tok/s"),
            ("peak GPU allocated", lambda r: fmt_bytes(r["peak_gpu_allocated"]) if r["peak_gpu_allocated"] else "n/a"),
            ("peak process RSS", lambda r: fmt_bytes(r["peak_rss"]))]
    if len(results) > 1:  # ratios to the first checkpoint, the baseline
        rows += [("prefill vs first", lambda r: f"{first['prefill_seconds'] / r['prefill_seconds']:.2f}× speed"),
                 ("decode vs first",
                  lambda r: f"{r['decode_tokens_per_second'] / first['decode_tokens_per_second']:.2f}×")]
    for label, cell in rows:
        table.add_row(label, *(cell(r) for r in results))
    Console().print(table)
