"""`pixtral-quant plan`: will this recipe's checkpoint run on this card? Parses options, delegates to
pixtral_quant.memory.memory_report, renders; exit 0 when it fits, 1 when it does not."""

from __future__ import annotations

import json

import click

from .group import main

LABELS = {"decoder_linears": "decoder Linears", "lm_head": "lm_head", "embeddings": "embeddings",
          "vision_tower": "vision tower", "projector": "projector", "norms": "norms"}


def _image_size(ctx, param, value):
    """'1024x768' → (1024, 768)."""
    if value is None:
        return None
    try:
        w, h = (int(x) for x in value.lower().split("x"))
    except ValueError:
        w = h = 0
    if w < 1 or h < 1:
        from ..errors import UsageError

        raise UsageError(f"{value!r} is not an image size", where="--image-size",
                         fix="write it as WIDTHxHEIGHT in pixels, e.g. 1024x1024")
    return w, h


@main.command("plan")
@click.option("--model", help="Model directory, config.json / params.json, hub id or shipped name (a config is "
              "enough). Default: the model of the recipe's promise (pixtral-12b, or pixtral-large for its recipe).")
@click.option("--recipe", required=True, help="Recipe file or shipped recipe name (recipes/*.yaml).")
@click.option("--gpu-memory", help="The card: 8GiB, 24GiB, 80GiB ... (default: the recipe's promise).")
@click.option("--reserve", help="GPU memory kept for the CUDA context (default: 0.5 GiB; 5 GiB from 40 GiB cards).")
@click.option("--context", type=click.IntRange(min=1), help="Tokens the KV cache holds (prompt + generated).")
@click.option("--images", type=click.IntRange(min=0), help="Images in the prompt (default 1).")
@click.option("--image-size", callback=_image_size, help="WIDTHxHEIGHT of each image (default 1024x1024).")
@click.option("--text-tokens", type=click.IntRange(min=0), help="Prompt text tokens (default 1024).")
@click.option("--new-tokens", type=click.IntRange(min=0), help="Generated tokens (default 128).")
@click.option("--embeddings", type=click.Choice(["gpu", "cpu"]), help="Where the embedding lookup runs.")
@click.option("--vision", type=click.Choice(["gpu", "offload"]), help="Vision tower + projector resident or offloaded.")
@click.option("--lm-head-on", type=click.Choice(["gpu", "cpu"]), help="Where the lm_head runs.")
@click.option("--runtime", type=click.Choice(["transformers", "llama.cpp"]),
              help="What runs the output: transformers (checkpoint recipes, the default) or llama.cpp (gguf-<type> "
              "recipes, their default): GGUF file sizes and llama.cpp's GPU placement.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan_cmd(model, recipe, gpu_memory, reserve, context, images, image_size, text_tokens, new_tokens, embeddings,
             vision, lm_head_on, runtime, as_json) -> None:
    """Bytes of a recipe's checkpoint and of one generation on a GPU: weights per component (quantized Linears
    with their scales, zeros and g_idx), KV cache, prefill activations, CUDA reserve. Exit 0 when the peak fits
    the card, 1 when it does not, with the cheapest change that would fit.

    Without options the recipe's own promise is checked (pixtral-12b-int4: 8 GiB, pixtral-12b-int8: 14 GiB,
    pixtral-large-int4: 80 GiB at 8k context; one 1024x1024 image + 1024 text tokens + 128 new tokens).

    \b
    Examples:
      pixtral-quant plan --recipe pixtral-12b-int8
      pixtral-quant plan --recipe pixtral-large-int4 --context 16384
      pixtral-quant plan --recipe pixtral-12b-int4 --gpu-memory 8GiB --embeddings cpu --json
      pixtral-quant plan --model /models/Pixtral-12B-2409/params.json --recipe my.yaml --gpu-memory 24GiB
      pixtral-quant plan --recipe pixtral-12b-gguf-q4_k_m --runtime llama.cpp
    """
    from ..api import plan
    from ..memory.units import fmt_bytes

    workload = {"context": context, "images": images, "text_tokens": text_tokens, "new_tokens": new_tokens}
    if image_size:
        workload.update(image_width=image_size[0], image_height=image_size[1])
    placement = {"embeddings": embeddings, "vision": vision, "lm_head": lm_head_on}
    result = plan(recipe, model, gpu_memory=gpu_memory, reserve=reserve, runtime=runtime, workload=workload,
                  placement=placement)
    report = result.report
    if result.runtime == "llama.cpp":
        _llamacpp(report, as_json)
        return
    report["placement_from"] = placement_source(report["recipe"], {k: v for k, v in placement.items() if v})
    click.echo(json.dumps(report, indent=2)) if as_json else _render(report)
    if not result.fits:
        _does_not_fit(f"the peak {fmt_bytes(report['peak_bytes'])} ({report['peak_phase']}) is over the "
                      f"{fmt_bytes(report['limit_bytes'])} a {fmt_bytes(report['card_bytes'])} card leaves",
                      _fix(report), as_json)


def _does_not_fit(why: str, fix: str, as_json: bool) -> None:
    """A card that is too small is plan's answer, not an error: the verdict and what would fit on stdout (after
    the tables; the JSON alone with --json), exit 1 (the CI contract: 0 fits, 1 does not, 2 bad input)."""
    if not as_json:
        click.echo(f"does not fit: {why}\nto fit: {fix}")
    click.get_current_context().exit(1)


def placement_source(recipe_name: str, given: dict) -> str:
    """Where the placement came from, for the reader: the options, the recipe's promise, or the defaults."""
    from ..memory.settings import SHIPPED_TARGETS, Placement

    target = SHIPPED_TARGETS.get(recipe_name)
    promised = {k: v for k, v in vars(target.placement).items() if v != getattr(Placement(), k)} if target else {}
    if not promised or set(promised) <= set(given):
        return "the options" if given else "the defaults"
    return (f"the recipe's promise ({recipe_name} on a {target.gpu_memory} card"
            + (", with the options given" if given else "") + "; --embeddings / --vision / --lm-head-on change it)")


def _llamacpp(report: dict, as_json: bool) -> None:
    """plan --runtime llama.cpp: GGUF sizes and GPU memory (memory/llamacpp.py); exit 1 when it does not fit."""
    from ..memory.units import fmt_bytes

    click.echo(json.dumps(report, indent=2)) if as_json else _render_llamacpp(report)
    if not report["fits"]:
        p = report["proposal"]
        fix = (f"the best that fits: --scheme {p['scheme']} --mmproj-type {p['mmproj_type']} "
               f"({fmt_bytes(p['gpu_bytes'])})" if p else "no smaller type fits: a shorter --context or a larger card")
        _does_not_fit(f"llama.cpp needs {fmt_bytes(report['gpu_bytes'])} of GPU memory, over the "
                      f"{fmt_bytes(report['limit_bytes'])} a {fmt_bytes(report['card_bytes'])} card leaves",
                      fix, as_json)


def _render_llamacpp(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..memory.units import fmt_bytes

    console = Console()
    files = report["files"]
    console.print(f"[bold]{report['model']}[/bold] with [bold]{report['recipe']}[/bold] ({report['scheme']}) in "
                  f"llama.cpp on a {fmt_bytes(report['card_bytes'])} card")
    types = ", ".join(f"{t} ×{n}" for t, n in sorted(files["text_types"].items(), key=lambda kv: -kv[1]))
    console.print(f"files: model.gguf {files['text_bytes']} bytes ({files['text_bytes'] / 1e9:.2f} GB; "
                  f"tensors by type: {types}), mmproj-model.gguf {files['mmproj_bytes']} bytes "
                  f"({files['mmproj_bytes'] / 1e9:.2f} GB)")
    tok = report["tokens"]
    console.print(f"workload: prompt {tok['prompt']} tokens ({tok['image_tokens']} image tokens), context "
                  f"{tok['context']} tokens")
    table = Table("GPU term", "bytes", title="GPU memory (llama.cpp placement; token_embd in host memory: "
                  f"{fmt_bytes(report['host_bytes'])})")
    for term, n in report["terms"].items():
        table.add_row(term, fmt_bytes(n))
    console.print(table)
    verdict = "[green]fits[/green]" if report["fits"] else "[red]does not fit[/red]"
    console.print(f"total {fmt_bytes(report['gpu_bytes'])}, limit {fmt_bytes(report['limit_bytes'])} "
                  f"({fmt_bytes(report['reserve_bytes'])} kept for CUDA): {verdict}")


def _fix(report: dict) -> str:
    from ..memory.units import in_unit

    p = report["proposal"]
    if p is None:
        return "no change in the table fits: use a larger card" + \
            (f" or a context of at most {report['max_context']} tokens" if report["max_context"] else "")
    fix = "cheapest change: " + "; ".join(c["label"] + ("" if c["supported"] else " (convert cannot write it yet)")
                                          for c in p["changes"])
    if any(c["key"] == "decoder-int4" for c in p["changes"]) and report["calibrated"]:
        card = in_unit(report["card_bytes"], "GiB")
        fix += (f"; or keep INT8 where it fits: `convert --scheme gptq-mixed --fit {card}` (the least-loss mix of "
                "INT8 and INT4 Linears whose plan fits)")
    return fix


def _render(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..memory.units import fmt_bytes

    console = Console()
    tok = report["tokens"]
    console.print(f"[bold]{report['model']}[/bold] with [bold]{report['recipe']}[/bold] ({report['scheme']}) on a "
                  f"{fmt_bytes(report['card_bytes'])} card: {fmt_bytes(report['limit_bytes'])} for tensors "
                  f"({fmt_bytes(report['reserve_bytes'])} kept for CUDA)")
    console.print(f"workload: prompt {tok['prompt']} tokens ({tok['image_tokens']} image tokens), context "
                  f"{tok['context']} tokens")
    weights = Table("component", "bytes", "where", "in the checkpoint", title="weights")
    ckpt = report["checkpoint"]
    for comp, row in report["weights"].items():
        stored = fmt_bytes(ckpt["tensor_bytes"].get(comp, 0))
        weights.add_row(LABELS[comp], fmt_bytes(row["bytes"]), row["where"], stored)
    console.print(weights)
    console.print(f"checkpoint: {fmt_bytes(ckpt['total_bytes'])} ({ckpt['total_bytes'] / 1e9:.2f} GB) in "
                  f"{ckpt['files']} file(s)" + ("" if ckpt["max_size_gb"] is None else
                                                f"; recipe max_size_gb {ckpt['max_size_gb']}: "
                                                f"{'ok' if ckpt['size_ok'] else 'over'}"))
    kv = report["kv_cache"]
    console.print(f"KV cache: {fmt_bytes(kv['bytes_per_1k_tokens'])} per 1k tokens, {fmt_bytes(kv['bytes'])} "
                  f"at {tok['context']} tokens")
    phases = Table("phase", "activations", "GPU total", title="GPU memory by phase")
    for phase, total in report["phases"].items():
        phases.add_row(phase, fmt_bytes(report["activations"][phase]), fmt_bytes(total))
    console.print(phases)
    verdict = "[green]fits[/green]" if report["fits"] else "[red]does not fit[/red]"
    console.print(f"placement: {_placement_words(report['placement'])}, from {report['placement_from']}")
    console.print(f"peak {fmt_bytes(report['peak_bytes'])} ({report['peak_phase']}), limit "
                  f"{fmt_bytes(report['limit_bytes'])}: {verdict}; host memory for CPU-placed weights "
                  f"{fmt_bytes(report['host_bytes'])}; {_context_words(report)}")
    for note in report.get("notes", []):
        console.print(f"note: {note}")
    for key, title in (("proposal", "cheapest change"), ("proposal_supported_today", "cheapest with today's convert")):
        if report[key]:
            p = report[key]
            console.print(f"{title}: " + "; ".join(c["label"] for c in p["changes"]) +
                          f" → peak {fmt_bytes(p['peak_bytes'])}, headroom {fmt_bytes(p['headroom_bytes'])}")


def _placement_words(placement: dict) -> str:
    return ", ".join(f"{k} {placement[k]}" for k in ("embeddings", "vision", "lm_head"))


def _context_words(report: dict) -> str:
    """The longest context in words: None means not even the prompt fits; the model's own limit is named."""
    n, limit = report["max_context"], report["model_context"]
    if n is None:
        return "no context fits on this card, not even the prompt alone"
    return f"longest context that fits: {n} tokens" + (" (the model's limit, max_position_embeddings)"
                                                        if n == limit else "")
