#!/usr/bin/env python
"""The full-size memory proof on one GPU (H100 / H200), in about 8 minutes, or the same steps at tiny scale on
the CPU (--tiny, what tests/test_gpu_check.py runs). Writes reports/gpu-check.json and .md with the GPU name.

Stages (each timed; one that would not finish before --budget-s is skipped and says so; a failing stage is
recorded with its error and the next one runs; the report is rewritten after every stage):
  env         GPU, versions, disk, the packages a GPTQ load needs
  synth       Pixtral-12B at full size, random weights (pixtral-quant synth, drawn on the GPU)
  int4, int8  convert with the shipped recipe's targets and scheme family in RTN (memory proof; GPTQ is timed
              apart), load with transformers as a user would, apply the recipe's placement, generate 128 tokens
              after one 1024x1024 image + 1024 text tokens; peak torch-allocated vs the plan's prediction and the
              7.5 / 13.5 GiB limits; then the cheapest placement convert supports today when the plan says the
              recipe alone does not fit; kernel-level decode timing of all decoder Linears (CUDA graphs) vs bf16
  gptq        GPTQ (the recipe's settings, fewer calibration samples) on a 2-layer model of full 12B width:
              seconds per layer, extrapolated to 40 layers and the recipe's sample count (said so)
  large       Pixtral Large with 4 of 88 decoder layers at full width, RTN INT4, generation at 8k context:
              measured vs predicted for 4 layers, then extrapolated to 88 (prediction + the 4-layer error)

    python scripts/gpu_check.py                     # on the GPU machine: reports/gpu-check.{json,md}
    python scripts/gpu_check.py --tiny --out /tmp/r # CPU, tiny model, seconds
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from pixtral_quant.memory.settings import SHIPPED_TARGETS, Placement, Workload  # noqa: E402
from pixtral_quant.memory.units import GIB  # noqa: E402
from pixtral_quant.recipes import data_free_recipe  # noqa: E402

TINY_WORKLOAD = Workload(image_width=64, image_height=64, text_tokens=16, new_tokens=3)


@dataclass(frozen=True)
class Mode:
    """What a run measures: full size on a GPU, or the same steps on the tiny model on the CPU."""

    model: str = "pixtral-12b"
    recipes: tuple[str, ...] = ("pixtral-12b-int4", "pixtral-12b-int8")
    large: str = "pixtral-large"
    large_recipe: str = "pixtral-large-int4"
    large_layers: int = 4
    gptq_layers: int = 2
    gptq_samples: int = 32
    calibration: str = "calib"
    device: str = "cuda"
    workload: Workload | None = None  # None: each recipe's promise (settings.SHIPPED_TARGETS)
    kernel_iters: int = 50
    # Seconds a stage needs at least (estimates for an H100 with 16 cores); one is skipped when less is left.
    stage_minimum_s: dict = field(default_factory=lambda: {"synth": 45, "convert-int4": 60, "generate-int4": 45,
                                                           "convert-int8": 60, "generate-int8": 45, "gptq": 60,
                                                           "large": 150})


TINY = Mode(model="tiny", large="tiny", large_layers=2, gptq_layers=1, gptq_samples=2, calibration="tiny",
            device="cpu", workload=TINY_WORKLOAD, kernel_iters=2, stage_minimum_s={})


class Run:
    """The report being built, the deadline, the scratch directory."""

    def __init__(self, mode: Mode, work: Path, out: Path, budget_s: float):
        self.mode, self.work, self.out = mode, work, out
        self.deadline = time.monotonic() + budget_s
        self.report: dict = {"mode": "tiny" if mode.device == "cpu" else "full", "stages": {}}
        self.models: dict[str, Path] = {}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def stage(self, name: str, fn) -> None:
        """Run one stage unless too little time is left; record result or error; rewrite the report."""
        need = self.mode.stage_minimum_s.get(name, 0)
        if self.left() < need:
            self.report["stages"][name] = {"status": "skipped", "why": f"{self.left():.0f} s left, needs ~{need} s"}
        else:
            start = time.monotonic()
            try:
                result = {"status": "ok", **fn(self)}
            except Exception as exc:  # recorded in the report; the remaining stages still run
                result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                          "traceback": traceback.format_exc()[-3000:]}
            result["seconds"] = round(time.monotonic() - start, 1)
            self.report["stages"][name] = result
        write_reports(self.report, self.out)


def rtn_math_on(device: str) -> None:
    """Run the RTN handler's math (schemes/rtn.py + intquant, unchanged) on `device`: tensors in, results back on
    the CPU. Bit-identical results; convert's CPU path needs minutes per 12B conversion even on 16 cores."""
    from pixtral_quant.schemes import rtn

    original = rtn.RtnHandler.quantize

    def quantize(self, name, weight, bias):
        with torch.device(device):
            out = original(self, name, weight.to(device), None if bias is None else bias.to(device))
        return {k: v.cpu() for k, v in out.items()}

    rtn.RtnHandler.quantize = quantize


def env_stage(run: Run) -> dict:
    """GPU name and memory, library versions, free disk, whether GPTQ checkpoints can be loaded."""
    import importlib.util

    import transformers

    cuda = torch.cuda.is_available()
    return {"gpu": torch.cuda.get_device_name(0) if cuda else None,
            "gpu_memory_bytes": torch.cuda.get_device_properties(0).total_memory if cuda else None,
            "torch": torch.__version__, "transformers": transformers.__version__,
            "packages": {p: importlib.util.find_spec(p) is not None for p in ("gptqmodel", "optimum", "bitsandbytes",
                                                                              "mistral_common", "accelerate")},
            "disk_free_bytes": shutil.disk_usage(run.work).free, "cpu_threads": torch.get_num_threads(),
            "rtn_math_device": run.mode.device}


def synth_stage(run: Run, name: str, config: str, layers: int | None) -> dict:
    from pixtral_quant.synth import synthesize

    device = run.mode.device
    result = synthesize(config, run.work / name, layers=layers, device=device, max_shard_bytes=4 * GIB)
    run.models[name] = result.out
    return {"params": result.params, "tensor_bytes": result.tensor_bytes, "layers": result.layers,
            "files": len(result.files), "synth_seconds": round(result.seconds, 1)}


def predicted(model_dir: Path, recipe, workload: Workload, placement: Placement, gpu_memory: str) -> dict:
    """The plan's numbers for the same recipe, workload and placement."""
    from pixtral_quant.memory import memory_report

    r = memory_report(model_dir, recipe, gpu_memory=gpu_memory, workload=asdict(workload),
                      placement={"embeddings": placement.embeddings, "vision": placement.vision,
                                 "lm_head": placement.lm_head})
    return {"peak_bytes": r["peak_bytes"], "peak_phase": r["peak_phase"], "limit_bytes": r["limit_bytes"],
            "fits": r["fits"], "checkpoint_bytes": r["checkpoint"]["total_bytes"],
            "supported_today": r["proposal_supported_today"]}


def convert_stage(run: Run, recipe_name: str, model: str) -> dict:
    from pixtral_quant.convert import convert

    recipe = data_free_recipe(recipe_name)
    out = run.work / f"{recipe_name}-rtn"
    result = convert(run.models[model], recipe, out, overwrite=True)
    run.models[recipe_name] = out
    return {"scheme": recipe.scheme.name, "convert_seconds": round(result.seconds, 1),
            "checkpoint_bytes": result.bytes_after}


def measured_vs_predicted(measured: dict, pred: dict, limit: int) -> dict:
    """Measured peak against the prediction (ratio) and the limit."""
    peak = measured["peak_gpu_allocated"] or measured["peak_rss"]
    return {"measured_peak_bytes": peak, "predicted_peak_bytes": pred["peak_bytes"],
            "measured_over_predicted": peak / pred["peak_bytes"],
            "within_10_percent": abs(peak / pred["peak_bytes"] - 1) <= 0.10,
            "limit_bytes": limit, "measured_fits": peak <= limit, "predicted_fits": pred["fits"]}


def generate_stage(run: Run, recipe_name: str) -> dict:
    """Load the converted checkpoint, place as the recipe's promise says, generate, time the kernels; then the
    placement supported today that the plan proposes, if the promise's own does not fit."""
    from pixtral_quant.bench import _kernel, image_ids, load, measure_generation
    from pixtral_quant.kernel_bench import decode_linears_timing
    from pixtral_quant.memory.placement import place

    target = SHIPPED_TARGETS[recipe_name]
    workload = run.mode.workload or target.workload
    path, dev = run.models[recipe_name], torch.device(run.mode.device)
    model, load_s = load(path, dev, torch.bfloat16)
    out = {"load_seconds": round(load_s, 1), "kernel": _kernel(model), "runs": []}
    placement, applied = target.placement, Placement()
    for attempt in range(2):
        place(model, Placement(**{k: getattr(placement, k) for k in ("embeddings", "vision", "lm_head")
                                  if getattr(placement, k) != getattr(applied, k)}), dev)
        applied = placement
        pred = predicted(path, data_free_recipe(recipe_name), workload, placement, target.gpu_memory)
        measured = measure_generation(model, image_ids(path), dev, torch.bfloat16, workload)
        out["runs"].append({"placement": asdict(placement), "predicted": pred, "measured": measured,
                            **measured_vs_predicted(measured, pred, pred["limit_bytes"])})
        if attempt == 0:
            out["decode_linears"] = decode_linears_timing(model, dev, run.mode.kernel_iters)
        if pred["fits"] or not pred["supported_today"]:
            break
        placement = replace(placement, **{k: v for k, v in pred["supported_today"]["placement"].items()
                                          if k in ("embeddings", "vision", "lm_head")})
    del model
    _free(dev)
    return out


def _free(dev) -> None:
    import gc

    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


class StampReporter:
    """convert's Reporter interface, keeping the time each bar closes (capture, then one per layer)."""

    def __init__(self):
        self.stamps: list[tuple[str, float]] = []
        self.current = ""

    def log(self, message) -> None:
        """Plans and messages are not needed here."""

    def task(self, description: str, total: int):
        self.current = description
        return lambda: None

    def done(self) -> None:
        self.stamps.append((self.current, time.monotonic()))


def gptq_stage(run: Run) -> dict:
    """GPTQ with the INT4 recipe's settings on a 12B-width model of a few layers; extrapolated to 40 layers and
    the recipe's calibration samples (linear in samples: an upper bound, the solve itself does not grow)."""
    from pixtral_quant.config import with_overrides
    from pixtral_quant.convert import convert
    from pixtral_quant.loading import open_checkpoint
    from pixtral_quant.recipes import load_recipe

    synth_stage(run, "gptq-model", run.mode.model, run.mode.gptq_layers)
    base = load_recipe(run.mode.recipes[0])
    recipe = with_overrides(base, {"calibration.num_samples": run.mode.gptq_samples,
                                   "calibration.set": run.mode.calibration})
    rep = StampReporter()
    start = time.monotonic()
    convert(run.models["gptq-model"], recipe, run.work / "gptq-out", overwrite=True, reporter=rep)
    times = [(name, t - prev) for (_, prev), (name, t) in zip([("start", start)] + rep.stamps[:-1], rep.stamps)]
    capture = times[0][1]
    layers = [x for name, x in times[1:] if name.startswith("layer ")]
    head = sum(x for name, x in times[1:] if name == "lm_head")  # the recipe's GPTQ lm_head, once per model
    full_layers = open_checkpoint(run.mode.model, require_tokenizer=False).config.text_config.num_hidden_layers
    scale = (base.calibration.num_samples or run.mode.gptq_samples) / run.mode.gptq_samples
    per_layer = sum(layers) / len(layers)
    shutil.rmtree(run.work / "gptq-out", ignore_errors=True)
    shutil.rmtree(run.models.pop("gptq-model"), ignore_errors=True)
    return {"samples": run.mode.gptq_samples, "recipe_samples": base.calibration.num_samples,
            "capture_seconds": round(capture, 1), "layer_seconds": [round(x, 1) for x in layers],
            "lm_head_seconds": round(head, 1),
            "extrapolated_12b_seconds": round(scale * (capture + per_layer * full_layers + head), 0),
            "extrapolation": f"(capture + mean layer time × {full_layers} + lm_head) × {scale:g} (recipe samples / "
                             "samples used); linear in samples, so an upper bound"}


def large_stage(run: Run) -> dict:
    """Pixtral Large with a few of its 88 layers at full width: convert, generate at 8k, extrapolate to 88."""
    from pixtral_quant.bench import image_ids, load, measure_generation
    from pixtral_quant.memory import memory_report

    mode, target = run.mode, SHIPPED_TARGETS[run.mode.large_recipe]
    workload = mode.workload or target.workload
    synth = synth_stage(run, "large-model", mode.large, mode.large_layers)
    conv = convert_stage(run, mode.large_recipe, "large-model")
    shutil.rmtree(run.models.pop("large-model"), ignore_errors=True)
    path, dev = run.models[mode.large_recipe], torch.device(mode.device)
    model, _ = load(path, dev, torch.bfloat16)
    measured = measure_generation(model, image_ids(path), dev, torch.bfloat16, workload)
    del model
    _free(dev)
    recipe = data_free_recipe(mode.large_recipe)
    small = memory_report(path, recipe, gpu_memory=target.gpu_memory, workload=asdict(workload))
    full = memory_report(mode.large, recipe, gpu_memory=target.gpu_memory, workload=asdict(workload))
    peak = measured["peak_gpu_allocated"] or measured["peak_rss"]
    extrapolated = full["peak_bytes"] + (peak - small["peak_bytes"])
    return {"synth": synth, "convert": conv, "measured": measured,
            **measured_vs_predicted(measured, {"peak_bytes": small["peak_bytes"], "fits": small["fits"]},
                                    small["limit_bytes"]),
            "full_layers": full["tokens"] and _layers(mode.large),
            "predicted_full_peak_bytes": full["peak_bytes"], "extrapolated_full_peak_bytes": extrapolated,
            "extrapolated_full_fits": extrapolated <= full["limit_bytes"], "full_limit_bytes": full["limit_bytes"],
            "extrapolation": "full-depth prediction + (measured − predicted) at the measured depth"}


def _layers(model: str) -> int:
    from pixtral_quant.memory.report import open_model

    return open_model(model).config.text_config.num_hidden_layers


def _gib(n) -> str:
    return "—" if n is None else f"{n / GIB:.2f} GiB"


def _generation_rows(name: str, stage: dict) -> list[str]:
    rows = []
    for r in stage.get("runs", []):
        m, p = r["measured"], r["placement"]
        where = ", ".join(f"{k} {v}" for k, v in p.items() if k in ("embeddings", "vision", "lm_head"))
        rows.append(f"| {name} | {where} | {_gib(r['predicted_peak_bytes'])} | {_gib(r['measured_peak_bytes'])} | "
                    f"{r['measured_over_predicted']:.3f} | {_gib(r['limit_bytes'])} | "
                    f"{'yes' if r['measured_fits'] else 'no'} | {m['prefill_seconds']:.2f} s | "
                    f"{m['decode_tokens_per_second']:.1f} |")
    return rows


def render(report: dict) -> str:
    """The Markdown report."""
    st = report["stages"]
    env = st.get("env", {})
    lines = [f"# GPU check — {env.get('gpu') or 'CPU (tiny mode)'}", "",
             *(["Tiny mode on the CPU: 'measured peak' is the process RSS (interpreter included), not comparable "
                "with the plan's GPU prediction; this run only proves the steps work.", ""]
               if report["mode"] == "tiny" else []),
             f"Mode: {report['mode']}. torch {env.get('torch')}, transformers {env.get('transformers')}; "
             f"packages: {env.get('packages')}.", "",
             "| checkpoint | placement | predicted peak | measured peak | measured / predicted | limit | fits | "
             "prefill | decode tok/s |", "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
    for name in [k for k in st if k.startswith("generate-")]:
        lines += _generation_rows(name.removeprefix("generate-"), st[name])
    lines += ["", "| decode, all decoder Linears at batch 1 | kernel | quantized | bf16 | speedup | CUDA graphs |",
              "| --- | --- | ---: | ---: | ---: | --- |"]
    for name in [k for k in st if k.startswith("generate-") and "decode_linears" in st[k]]:
        d = st[name]["decode_linears"]
        lines.append(f"| {name.removeprefix('generate-')} | {d['kernel']} | {d['quantized_ms']:.3f} ms | "
                     f"{d['bf16_ms']:.3f} ms | {d['speedup']:.2f}x | {d['cuda_graphs']} |")
    if st.get("gptq", {}).get("status") == "ok":
        g = st["gptq"]
        lines += ["", f"GPTQ: capture {g['capture_seconds']} s, layers {g['layer_seconds']} s with {g['samples']} "
                  f"samples; 12B conversion extrapolated: {g['extrapolated_12b_seconds']:.0f} s "
                  f"({g['extrapolation']})."]
    if st.get("large", {}).get("status") == "ok":
        g = st["large"]
        lines += ["", f"Large, {g['synth']['layers']} layers at full width: measured "
                  f"{_gib(g['measured_peak_bytes'])} vs predicted {_gib(g['predicted_peak_bytes'])} "
                  f"({g['measured_over_predicted']:.3f}); all {g['full_layers']} layers: "
                  f"predicted {_gib(g['predicted_full_peak_bytes'])}, extrapolated "
                  f"{_gib(g['extrapolated_full_peak_bytes'])} against {_gib(g['full_limit_bytes'])} "
                  f"({'fits' if g['extrapolated_full_fits'] else 'does not fit'}); {g['extrapolation']}."]
    lines += ["", "| stage | status | seconds | note |", "| --- | --- | ---: | --- |"]
    for name, s in st.items():
        note = s.get("error") or s.get("why") or ""
        lines.append(f"| {name} | {s['status']} | {s.get('seconds', '')} | {note[:200]} |")
    return "\n".join(lines) + "\n"


def write_reports(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    out.with_suffix(".md").write_text(render(report))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="the tiny model on the CPU (seconds; for the test)")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "gpu-check", help="report path without suffix")
    ap.add_argument("--work", type=Path, default=Path("/tmp/gpu-check"), help="scratch (needs ~50 GB at full size)")
    ap.add_argument("--budget-s", type=float, default=470.0, help="stop starting stages after this many seconds")
    ap.add_argument("--stages", nargs="+", help="only these stages (env synth int4 int8 gptq large)")
    args = ap.parse_args(argv)
    mode = TINY if args.tiny else Mode()
    args.work.mkdir(parents=True, exist_ok=True)
    if mode.device == "cuda":
        rtn_math_on("cuda")
    run = Run(mode, args.work, args.out, args.budget_s)
    wanted = set(args.stages or ("env", "synth", "int4", "int8", "gptq", "large"))
    for name, fn in plan_stages(mode):
        if name.split("-")[-1] in wanted or name.split("-")[0] in wanted:
            run.stage(name, fn)
    for path in list(run.models.values()):
        shutil.rmtree(path, ignore_errors=True)
    print(render(run.report))
    return 0 if all(s["status"] != "failed" for s in run.report["stages"].values()) else 1


def plan_stages(mode: Mode) -> list[tuple[str, object]]:
    """(name, function) in run order."""
    stages = [("env", env_stage), ("synth", lambda run: synth_stage(run, "model", mode.model, None))]
    for recipe in mode.recipes:
        tag = recipe.rsplit("-", 1)[-1]  # int4 / int8
        stages += [(f"convert-{tag}", lambda run, r=recipe: convert_stage(run, r, "model")),
                   (f"generate-{tag}", lambda run, r=recipe: generate_stage(run, r))]
    stages += [("drop-synth", lambda run: {"freed": str(shutil.rmtree(run.models.pop("model"), ignore_errors=True))}),
               ("gptq", gptq_stage), ("large", large_stage)]
    return stages


if __name__ == "__main__":
    sys.exit(main())
