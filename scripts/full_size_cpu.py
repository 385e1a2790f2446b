#!/usr/bin/env python
"""The full-size proof on the CPU: Pixtral-12B and Pixtral Large shapes synthesized, converted and loaded for real,
every figure next to what `plan` and the conversion-RSS model predicted (issue 13). Writes
reports/full-size-cpu.json and .md; the report is rewritten after every stage.

Stages (each job in its own fresh process: scripts/full_size_jobs.py; peak RSS = the larger of the job's own
VmHWM and the sampled RSS of its whole process tree, pixtral_quant.diagnostics.tree):
  synth  12B at full size in the native format (the project's loader: tensor count, names, sampled tensors),
         deleted, then in HF format with outlier columns: the same names and the sampled tensors bit-equal
  int4   convert rtn-int4 with the pixtral-12b-int4 targets (INT4 lm_head): seconds, peak RSS, bytes vs the plan
         (byte-exact) and vs the conversion-RSS model (within 15 %, under 16 GiB); then load with plain
         transformers and generate 8 tokens after a 256x256 image: peak RSS vs the plan's host-side figure
         (import baseline + the plan's peak with every component on the device, here the CPU), tokens/s,
         finite scores, the same tokens twice
  int8   the same with rtn-int8 and the pixtral-12b-int8 targets
  nf4    convert bnb-nf4 (no load)
  gptq   gptq-int4 with the pixtral-12b-int4 recipe and fewer samples at 12B width, 2 and 4 decoder layers:
         seconds per layer split into capture / Hessian / solve / read / write, peak RSS vs the model;
         extrapolated to 40 layers and the recipe's calibration tokens (said so)
  large  Pixtral Large at full width with 4 of 88 decoder layers: convert rtn-int4, load, generate; per-layer
         bytes and RSS measured vs predicted, extrapolated to 88
Before anything, the script checks free disk against what the selected stages need at their fullest (from the
plan's byte sizes) and refuses (exit 2) saying how much; each stage checks again, and checks available memory
against its predicted peak. Intermediates are deleted when no stage left needs them. A rerun keeps the stages
already `ok` in the JSON (same mode) unless --fresh; --only / --skip choose stages.

    python scripts/full_size_cpu.py                       # full size: hours on 2 cores, ~56 GB of free disk
    python scripts/full_size_cpu.py --only gptq large     # rerun two stages, keep the rest of the report
    python scripts/full_size_cpu.py --tiny --out /tmp/r/full-size-cpu   # every stage on tiny shapes, ~1 minute
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))  # the package of this checkout (scripts import the package, never each other)

from pixtral_quant.recipes import data_free_recipe  # noqa: E402

from pixtral_quant.diagnostics.measure import MARK  # noqa: E402
from pixtral_quant.memory.settings import Workload  # noqa: E402
from pixtral_quant.diagnostics.tree import run_sampled  # noqa: E402

from pixtral_quant.memory.units import GIB  # noqa: E402
from pixtral_quant.loading.names import LAYERS  # noqa: E402

JOBS = SCRIPTS / "full_size_jobs.py"
STAGES = ("synth", "int4", "int8", "nf4", "gptq", "large")
NEEDS_SOURCE = ("int4", "int8", "nf4")  # stages that convert the full-size HF source
RSS_TOLERANCE = 0.15  # issue 13: measured peak RSS within 15 % of the model's prediction
RSS_LIMIT = 16 * GIB  # ... and under 16 GiB
DISK_MARGIN = 2 * 10**9  # headers, side files, the native sample, spilled activations


@dataclass(frozen=True)
class Mode:
    """What a run measures: the real shapes, or the same stages on the tiny model (--tiny)."""

    name: str = "full"
    model: str = "pixtral-12b"
    outliers: int = 4
    int4: str = "pixtral-12b-int4"
    int8: str = "pixtral-12b-int8"
    gptq_layers: tuple[int, ...] = (2, 4)
    gptq_samples: int = 8
    calibration: str = "calib"
    workload: Workload = field(default_factory=lambda: Workload(image_width=256, image_height=256,
                                                                 text_tokens=16, new_tokens=8))
    large: str = "pixtral-large"
    large_recipe: str = "pixtral-large-int4"
    large_layers: int = 4
    job_timeout_s: float = 6 * 3600  # one job (a 12B GPTQ run is the longest) before it is killed


TINY = Mode(name="tiny", model="tiny", gptq_layers=(1, 2), gptq_samples=2, calibration="tiny",
            workload=Workload(image_width=64, image_height=64, text_tokens=8, new_tokens=8), large="tiny",
            large_layers=2, job_timeout_s=600)


# --- recipes and predictions ---------------------------------------------------------------------------------

def recipes(mode: Mode) -> dict:
    """The Recipe of every conversion, by key."""
    from pixtral_quant.config import SCHEME_CONFIGS, Recipe, with_overrides
    from pixtral_quant.recipes import load_recipe

    gptq = with_overrides(load_recipe(mode.int4), {"calibration.num_samples": mode.gptq_samples,
                                                   "calibration.set": mode.calibration})
    return {"int4": data_free_recipe(mode.int4), "int8": data_free_recipe(mode.int8),
            "nf4": Recipe(scheme=SCHEME_CONFIGS["bnb-nf4"](), name="bnb-nf4"), "gptq": gptq,
            "large": data_free_recipe(mode.large_recipe)}


def config_of(model: str, layers: int | None = None):
    from pixtral_quant.memory.report import open_model
    from pixtral_quant.synth import with_depth

    return with_depth(open_model(model).config, layers)


def source_bytes(model: str, layers: int | None = None) -> int:
    """Bytes of the bf16 tensors synth writes (headers apart)."""
    from pixtral_quant.loading.arch import expected_shapes

    return 2 * sum(math.prod(s) for s in expected_shapes(config_of(model, layers)).values())


def checkpoint_estimate(model: str, recipe, layers: int | None = None):
    """The plan's CheckpointEstimate (tensor bytes per component, safetensors headers) at any depth."""
    from pixtral_quant.memory.checkpoint import estimate
    from pixtral_quant.memory.inventory import inventory, model_shapes

    shapes = model_shapes(config_of(model, layers), "bfloat16")
    return estimate(inventory(shapes, recipe), recipe.max_shard_bytes)


def checkpoint_bytes(model: str, recipe, layers: int | None = None) -> int:
    """The plan's exact checkpoint size (tensors + safetensors headers) at any depth."""
    return checkpoint_estimate(model, recipe, layers).total_bytes


def rss_terms(model_dir, recipe, baseline: int, calib_tokens: int | None = None, layers: int | None = None):
    """conversion.convert_rss for a model directory or config (CPU host, the measured baseline)."""
    from pixtral_quant.diagnostics.conversion import convert_rss
    from pixtral_quant.memory.inventory import model_shapes

    config = config_of(model_dir, layers)
    return convert_rss(config, model_shapes(config), recipe, gpu=False, calib_tokens=calib_tokens,
                       baseline=baseline)


# CPU kernels that copy the quantized weights into a layout of their own at a Linear's first forward (gptqmodel's
# TorchAtenLinear.transform_cpu, gptqmodel/nn_modules/qlinear/torch_aten_kernel.py: aten's int4pack), with the
# bytes per weight that copy needs for a moment above what stays. Two terms, both measured (RssAnon/RssFile/VmHWM
# from /proc/self/status around every transform_cpu call, 12B-width int4 checkpoints with an INT4 lm_head):
# - mapped pages: transformers maps the checkpoint, so the pages the copy read stay resident as file-backed RSS
#   next to the anonymous copy: the quantized Linears count twice (per layer, after the repack, +0.51 B/weight
#   RssFile and +0.50 B/weight RssAnon; 2 -> 4 layers: peak +0.258 GiB per layer, the model says 0.264). Clean
#   page cache the kernel could reclaim under pressure, but RSS and VmHWM count it.
# - transient, 5 B/weight of the Linear being repacked: lines 187-193 unpack the int32 qweight (through an int32
#   [in, out] shift result, freed at once) into uint8 codes, 195-200 reorder them into `weight`, uint8 [out, in]
#   (1 B/weight), and line 201 `weight.int()` makes an int32 [out, in] copy (4 B/weight) for
#   _convert_weight_to_int4pack_for_cpu while `weight` is still alive; the packed result (0.5 B/weight) is what
#   stays. Linears repack one at a time, so only the largest counts: the INT4 lm_head, 5120 x 131072 at 12B
#   (3.13 GiB; measured 3.10 GiB above the state after its repack at 2 and at 4 layers, 4.95 B/weight), else the
#   largest decoder Linear (measured 4.95-5.0 B/weight on the 5120 x 14336 MLP Linears). It was the missing term
#   of the full-size int4 run (16.67 GiB measured vs 14.11 predicted without it; 2 and 4 layers: 6.25 / 6.76 GiB
#   vs 4.03 / 4.56), and the 2.2-2.6 GiB gap did not grow with depth.
# int8 (TorchLinear) dequantizes per call from the mapped tensors as they are: neither term.
REPACKING_KERNELS = {"TorchAtenLinear": 5}  # kernel -> transient bytes per weight of the largest repacked Linear


def repack_transient(model, recipe, kernel: str | None) -> int:
    """Bytes a repacking CPU kernel (REPACKING_KERNELS) allocates for a moment while it repacks the largest of
    the recipe's GPTQ-format Linears of `model` (a directory, shipped name or config.json): bytes per weight x
    in x out; 0 for any other kernel."""
    from pixtral_quant.memory.inventory import format_shapes, model_shapes

    if kernel not in REPACKING_KERNELS:
        return 0
    shapes = format_shapes(model_shapes(config_of(model)), recipe).get("gptq", [])
    return REPACKING_KERNELS[kernel] * max((i * o for i, o in shapes), default=0)


def exact_context(model, workload: Workload) -> Workload:
    """`workload` with its context set to what the job holds (prompt + new tokens) when it is None: memory_report
    takes the recipe's promise for every field left None, and pixtral-large-int4 promises an 8k context; the job
    generates after a prompt of one image and a few text tokens (the first Large prediction was made at 8,192
    tokens: 1.87 GiB of prefill activations the job never held)."""
    from dataclasses import replace

    from pixtral_quant.memory.budget import tokens_of

    if workload.context is not None:
        return workload
    return replace(workload, context=tokens_of(config_of(model), workload).context)


def host_prediction(model, recipe, workload: Workload, baseline: int, kernel: str | None = None) -> dict:
    """The plan's peak with every component on the device (on a CPU-only machine that device is host memory)
    plus the import baseline: the host-side prediction of loading and generating on the CPU; for a repacking
    CPU kernel (REPACKING_KERNELS) plus the quantized Linears' bytes once more (their mapped pages) and the
    transient of repacking the largest of them (repack_transient)."""
    from pixtral_quant.memory import memory_report

    r = memory_report(model, recipe, workload=asdict(exact_context(model, workload)),
                      placement={"embeddings": "gpu", "vision": "gpu", "lm_head": "gpu"})
    quantized = r["weights"]["decoder_linears"]["bytes"] + (r["weights"]["lm_head"]["bytes"]
                                                            if recipe.targets.lm_head else 0)
    repack = quantized if kernel in REPACKING_KERNELS else 0
    transient = repack_transient(model, recipe, kernel)
    return {"plan_peak_bytes": r["peak_bytes"], "plan_peak_phase": r["peak_phase"], "baseline_rss": baseline,
            "repack_file_pages": repack, "repack_transient": transient,
            "predicted_peak_rss": baseline + r["peak_bytes"] + repack + transient,
            "weights_bytes": sum(w["bytes"] for w in r["weights"].values())}


# --- disk and memory -----------------------------------------------------------------------------------------

def disk_needs(mode: Mode) -> dict[str, int]:
    """Bytes each stage has on disk at its fullest (a conversion writes its checkpoint and a resume journal of
    the same size; the HF source stays through int4, int8 and nf4)."""
    rs = recipes(mode)
    src = source_bytes(mode.model)
    conv = {k: 2 * checkpoint_bytes(mode.model, rs[k]) for k in NEEDS_SOURCE}
    gptq = max(source_bytes(mode.model, n) + 2 * checkpoint_bytes(mode.model, rs["gptq"], n)
               for n in mode.gptq_layers)
    large = source_bytes(mode.large, mode.large_layers) + 2 * checkpoint_bytes(mode.large, rs["large"],
                                                                               mode.large_layers)
    return {"synth": src, **{k: src + v for k, v in conv.items()}, "gptq": gptq, "large": large}


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        return int(next(ln for ln in f if ln.startswith("MemAvailable:")).split()[1]) * 1024


def machine(work: Path) -> dict:
    """The CPU model, cores, RAM and disk of this machine, library versions."""
    import torch
    import transformers

    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    with open("/proc/meminfo") as f:
        ram = int(next(ln for ln in f if ln.startswith("MemTotal:")).split()[1]) * 1024
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_bytes": ram, "mem_available_bytes": mem_available(),
            "disk_free_bytes": shutil.disk_usage(work).free, "work": str(work), "kernel": platform.release(),
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "torch_threads": torch.get_num_threads()}


# --- running one job ------------------------------------------------------------------------------------------

class StageError(RuntimeError):
    """A job failed or a stage could not run; the message goes into the report."""


class Skip(Exception):
    """A stage cannot run on this machine now (disk, memory); recorded as skipped with the reason."""


def job(run: "Run", spec: dict, *, predicted_rss: int | None = None) -> dict:
    """Run one job in a fresh process; its result with peak_rss (own VmHWM), tree_peak_rss (sampled) and
    peak (the larger). Skip when the machine has less memory available than the predicted peak."""
    if predicted_rss is not None and mem_available() < predicted_rss:
        raise Skip(f"{spec['kind']} needs about {predicted_rss / GIB:.1f} GiB, {mem_available() / GIB:.1f} GiB "
                   "available: stop other jobs and rerun this stage")
    run.log(f"  {spec['kind']} {spec.get('out') or spec.get('checkpoint') or spec.get('dir')}")
    done = run_sampled([sys.executable, str(JOBS), json.dumps(spec)], timeout=run.mode.job_timeout_s)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(MARK)]
    if done.returncode != 0 or not lines:
        why = "timed out" if done.timed_out else f"exit {done.returncode}"
        raise StageError(f"job {spec['kind']} failed ({why}): {done.stderr[-1500:]}")
    m = json.loads(lines[-1][len(MARK):])
    m.update(tree_peak_rss=done.tree_peak_rss, tree_processes=done.tree_peak_processes,
             peak=max(m["peak_rss"], done.tree_peak_rss), wall_seconds=done.seconds)
    return m


def verdict(measured: int, predicted: int, limit: int | None = RSS_LIMIT) -> dict:
    ratio = measured / predicted
    out = {"measured": measured, "predicted": predicted, "ratio": ratio,
           "within_tolerance": abs(ratio - 1) <= RSS_TOLERANCE}
    if limit is not None:
        out.update(limit=limit, under_limit=measured <= limit)
    return out


# --- the run --------------------------------------------------------------------------------------------------

class Run:
    """The report being built, the scratch directory and what is on it."""

    def __init__(self, mode: Mode, work: Path, out: Path, report: dict, quiet: bool = False):
        self.mode, self.work, self.out, self.report, self.quiet = mode, work, out, report, quiet
        self.recipes = recipes(mode)

    def log(self, message: str) -> None:
        if not self.quiet:
            print(message, flush=True)

    def path(self, name: str) -> Path:
        return self.work / name

    def drop(self, *names: str) -> None:
        for name in names:
            shutil.rmtree(self.path(name), ignore_errors=True)

    def stage(self, name: str, fn) -> None:
        """Run one stage; record its result, a skip or an error; rewrite the report."""
        self.log(f"stage {name}")
        start = time.monotonic()
        try:
            need = disk_needs(self.mode)[name] - (dir_bytes(self.path("source")) if name in NEEDS_SOURCE else 0)
            free = shutil.disk_usage(self.work).free
            if free < need + DISK_MARGIN:
                raise Skip(f"needs {(need + DISK_MARGIN) / 1e9:.1f} GB free disk in {self.work}, "
                           f"{free / 1e9:.1f} GB free")
            result = {"status": "ok", **fn(self)}
        except Skip as exc:
            result = {"status": "skipped", "why": str(exc)}
        except Exception as exc:  # recorded in the report; the remaining stages still run
            result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:3000],
                      "traceback": traceback.format_exc()[-3000:]}
        result["seconds"] = round(time.monotonic() - start, 1)
        self.report["stages"][name] = result
        write_reports(self.report, self.out)


def ensure_source(run: Run, compare_with: Path | None = None) -> dict | None:
    """The full-size HF source (outlier columns), synthesized unless a complete one is there (synth is
    deterministic: a rerun gets the same bytes). Returns the synth job's measurement when it ran."""
    src = run.path("source")
    if compare_with is None and (src / ".complete").exists():
        return None
    run.drop("source")
    m = job(run, {"kind": "synth", "config": run.mode.model, "out": str(src), "outliers": run.mode.outliers,
                  "compare_with": None if compare_with is None else str(compare_with)})
    (src / ".complete").write_text("")
    return m


def synth_here(config: str, out: Path, layers: int, outliers: int = 0) -> dict:
    """A reduced-depth model for a later stage, synthesized in this process (its memory is not a figure of the
    report; one process start fewer). Freed heap pages go back to the OS before the next job starts."""
    from pixtral_quant.pipeline.runtime import release_freed_memory
    from pixtral_quant.synth import Outliers, synthesize

    r = synthesize(config, out, layers=layers, outliers=Outliers(outliers) if outliers else None)
    release_freed_memory()
    return {"layers": r.layers, "tensor_bytes": r.tensor_bytes, "params": r.params, "synth_seconds": r.seconds}


def synth_stage(run: Run) -> dict:
    """Native format first (the loader at full size: count, names, sampled tensors), deleted, then HF."""
    mode, sample = run.mode, run.path("native-sample.safetensors")
    run.drop("native", "source")
    native = job(run, {"kind": "synth", "config": mode.model, "out": str(run.path("native")), "fmt": "native",
                       "outliers": mode.outliers, "sample_to": str(sample)})
    run.drop("native")
    hf = ensure_source(run, compare_with=sample)
    sample.unlink()
    predicted = source_bytes(mode.model)
    n, h = native["result"]["check"], hf["result"]["check"]
    return {"native": native, "hf": hf, "predicted_tensor_bytes": predicted,
            "tensor_bytes_match": native["result"]["tensor_bytes"] == hf["result"]["tensor_bytes"] == predicted,
            "same_names": n["tensors"] == h["tensors"] and n["names_hash"] == h["names_hash"],
            "sampled_bit_equal": h["all_bit_equal"]}


def convert_measured(run: Run, key: str, model_dir: Path, out: Path, *, model: str, layers: int | None = None,
                     timing: bool = False) -> dict:
    """One conversion: measured, next to the plan's bytes and the conversion-RSS model."""
    from pixtral_quant.memory import memory_report

    recipe = run.recipes[key]
    guess = rss_terms(model_dir, recipe, int(0.76 * GIB)).peak  # before the job: the model's default baseline
    m = job(run, {"kind": "convert", "model": str(model_dir), "recipe": recipe.to_dict(), "out": str(out),
                  "timing": timing}, predicted_rss=guess)
    r = m["result"]
    planned = memory_report(model_dir, recipe)["checkpoint"]["total_bytes"]
    return {"scheme": recipe.scheme.name, "targets": asdict(recipe.targets), "measured": m,
            "seconds": r["seconds"], "bytes": r["bytes_after"], "plan_bytes": planned,
            "plan_bytes_full_depth": checkpoint_bytes(model, recipe) if layers else planned,
            "bytes_exact": r["bytes_after"] == planned, **convert_predictions(model, recipe, m, layers)}


def convert_predictions(model: str, recipe, m: dict, layers: int | None) -> dict:
    """The conversion-RSS model's terms for a measured convert job `m` of `model` cut to `layers` (from the
    config: the job's own baseline and calibration tokens), its verdict, and the prediction at full depth plus
    the measured error."""
    tokens = m["result"]["calibration_tokens"]
    terms = rss_terms(model, recipe, m["baseline_rss"], tokens, layers)
    full = rss_terms(model, recipe, m["baseline_rss"], tokens)
    return {"rss_terms": asdict(terms), "rss": verdict(m["peak"], terms.peak), "rss_full_depth_predicted": full.peak,
            "rss_full_depth_extrapolated": full.peak + m["peak"] - terms.peak}


def generate_measured(run: Run, key: str, checkpoint: Path, *, full_model: str | None = None) -> dict:
    """Load + generate, next to the plan's host-side prediction (and, for a model of fewer layers, the
    prediction at full depth plus the measured error)."""
    recipe, workload = run.recipes[key], run.mode.workload
    guess = host_prediction(checkpoint, recipe, workload, int(0.76 * GIB))["predicted_peak_rss"]
    m = job(run, {"kind": "generate", "checkpoint": str(checkpoint), "workload": asdict(workload)},
            predicted_rss=guess)
    out = {"measured": m, "workload": asdict(workload),
           "tokens_per_second": m["result"]["tokens_per_second"],
           "decode_tokens_per_second": m["result"]["decode_tokens_per_second"],
           "finite": m["result"]["finite"], "deterministic": m["result"]["deterministic"]}
    return {**out, **predictions(checkpoint, recipe, workload, m, full_model)}


def predictions(model, recipe, workload: Workload, m: dict, full_model: str | None = None) -> dict:
    """The host-side prediction of a measured load/generate job `m` for `model` (a checkpoint or a config
    folder: only the config is read), its verdict, and for a reduced-depth model the prediction at full depth
    plus the measured error."""
    pred = host_prediction(model, recipe, workload, m["baseline_rss"], m["result"]["kernel"])
    out = {"predicted": pred, "rss": verdict(m["peak"], pred["predicted_peak_rss"], None)}
    if full_model is not None:
        full = host_prediction(full_model, recipe, workload, m["baseline_rss"], m["result"]["kernel"])
        out.update(full_depth_predicted=full["predicted_peak_rss"],
                   full_depth_extrapolated=full["predicted_peak_rss"] + m["peak"] - pred["predicted_peak_rss"])
    return out


def repredict(report: dict, mode: Mode) -> None:
    """Recompute each recorded prediction with the current models: conversion RSS (every conversion, from its
    measured import baseline and calibration tokens) and load/generate (int4 / int8 / nf4, large, from the
    stage's baseline and kernel). Predictions are functions of the model's config and the recipe (the checkpoints
    are deleted after their stage), so a fixed model re-scores the old measurements. Measurements are not
    touched."""
    rs, st = recipes(mode), report["stages"]
    for key in ("int4", "int8", "nf4"):
        if conv := st.get(key, {}).get("convert"):
            conv.update(convert_predictions(mode.model, rs[key], conv["measured"], None))
        if gen := st.get(key, {}).get("generate"):
            gen.update(predictions(mode.model, rs[key], mode.workload, gen["measured"]))
    for n, r in st.get("gptq", {}).get("runs", {}).items():
        r["convert"].update(convert_predictions(mode.model, rs["gptq"], r["convert"]["measured"], int(n)))
    if conv := st.get("large", {}).get("convert"):
        conv.update(convert_predictions(mode.large, rs["large"], conv["measured"], mode.large_layers))
    if gen := st.get("large", {}).get("generate"):  # its few-layer checkpoint is gone: its config stands in
        with tempfile.TemporaryDirectory(prefix="large-config-") as folder:
            config_of(mode.large, mode.large_layers).save_pretrained(folder)
            gen.update(predictions(folder, rs["large"], mode.workload, gen["measured"], full_model=mode.large))


def scheme_stage(run: Run, key: str, load: bool) -> dict:
    """Convert the full-size source with one scheme (then load and generate); the checkpoint is deleted after."""
    synth = ensure_source(run)
    out = run.path(f"out-{key}")
    try:
        result = {"source_synthesized": synth, "convert": convert_measured(run, key, run.path("source"), out,
                                                                            model=run.mode.model)}
        if load:
            result["generate"] = generate_measured(run, key, out)
        return result
    finally:
        run.drop(f"out-{key}")


def gptq_stage(run: Run) -> dict:
    """gptq-int4 at full width and a few depths: per-layer phases, flatness, extrapolation to full depth and the
    recipe's calibration tokens."""
    from gptq_timing import extrapolate, split

    mode, recipe = run.mode, run.recipes["gptq"]
    runs = {}
    for n in mode.gptq_layers:
        model_dir, out = run.path(f"gptq-model-{n}"), run.path(f"gptq-out-{n}")
        run.drop(model_dir.name, out.name)  # what a killed earlier run left (synth refuses a non-empty folder)
        try:
            synth = synth_here(mode.model, model_dir, n, mode.outliers)
            conv = convert_measured(run, "gptq", model_dir, out, model=mode.model, layers=n, timing=True)
        finally:
            run.drop(model_dir.name, out.name)
        conv["split"] = split(conv["measured"]["result"], n)
        runs[str(n)] = {"synth": synth, "convert": conv}
    deepest = runs[str(max(mode.gptq_layers))]["convert"]
    full_layers = config_of(mode.model).text_config.num_hidden_layers
    recipe_tokens = calibration_tokens(mode, recipe)
    per_layer = {k: v["convert"]["split"]["per_layer_mean"]["total"] for k, v in runs.items()}
    return {"runs": runs, "per_layer_seconds": per_layer,
            "flat": max(per_layer.values()) / min(per_layer.values()) - 1 <= RSS_TOLERANCE,
            "recipe_samples": recipe_samples(mode), "recipe_tokens": recipe_tokens,
            **extrapolate(deepest["split"], full_layers, recipe_tokens / deepest["measured"]["result"][
                "calibration_tokens"])}


def recipe_samples(mode: Mode) -> int:
    from pixtral_quant.calibration.dataset import list_samples
    from pixtral_quant.recipes import load_recipe

    return min(load_recipe(mode.int4).calibration.num_samples, len(list_samples(mode.calibration)[1]))


def calibration_tokens(mode: Mode, recipe) -> int:
    """Tokens of the recipe's full calibration set (num_samples of the shipped recipe) with the model's
    tokenizer: load_set counts them exactly without encoding the images."""
    from pixtral_quant.calibration.dataset import list_samples, load_set
    from pixtral_quant.loading import open_checkpoint
    from pixtral_quant.recipes import load_recipe

    calib = load_recipe(mode.int4).calibration
    tok = open_checkpoint(mode.model, require_tokenizer=False).tokenizer
    available = len(list_samples(recipe.calibration.set)[1])  # the tiny set is smaller than 256 samples
    return load_set(recipe.calibration.set, tok, num_samples=min(calib.num_samples, available), seed=calib.seed,
                    max_tokens=calib.max_tokens).stats.total_tokens


def tensor_bytes(checkpoint: Path) -> tuple[dict[int, int], int]:
    """(bytes of each decoder layer's tensors, bytes of all tensors) of a written checkpoint, from its
    safetensors headers (headers themselves excluded)."""
    from safetensors import safe_open

    from pixtral_quant.loading.names import checkpoint_to_runtime

    layers, total = {}, 0
    for f in sorted(checkpoint.glob("*.safetensors")):
        with safe_open(f, "numpy") as s:  # headers only; "pt" maps copy-on-write (ENOMEM past RAM size)
            for k in s.keys():  # noqa: SIM118 - safe_open is not a dict
                sl = s.get_slice(k)
                n = math.prod(sl.get_shape()) * SAFETENSORS_BYTES[sl.get_dtype()]
                total += n
                name = checkpoint_to_runtime(k) or k
                if name.startswith(LAYERS):
                    i = int(name[len(LAYERS):].split(".", 1)[0])
                    layers[i] = layers.get(i, 0) + n
    return layers, total


SAFETENSORS_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                     "BOOL": 1}


def large_stage(run: Run) -> dict:
    """Pixtral Large at full width, a few of its layers: convert rtn-int4, load, generate; per layer and
    extrapolated to all layers."""
    from pixtral_quant.memory.inventory import inventory, model_shapes

    mode, recipe = run.mode, run.recipes["large"]
    model_dir, out = run.path("large-model"), run.path("large-out")
    run.drop(model_dir.name, out.name)  # what a killed earlier run left (synth refuses a non-empty folder)
    try:
        synth = synth_here(mode.large, model_dir, mode.large_layers)
        conv = convert_measured(run, "large", model_dir, out, model=mode.large, layers=mode.large_layers)
        run.drop(model_dir.name)
        gen = generate_measured(run, "large", out, full_model=mode.large)
        measured_layers, measured_total = tensor_bytes(out)
    finally:
        run.drop(model_dir.name, out.name)
    shapes = model_shapes(config_of(mode.large, mode.large_layers), "bfloat16")
    predicted_layer = sum(it.nbytes for it in inventory(shapes, recipe) if it.stored
                          and it.name.startswith(f"{LAYERS}0."))
    full_layers = config_of(mode.large).text_config.num_hidden_layers
    outside = measured_total - sum(measured_layers.values())
    return {"synth": synth, "convert": conv, "generate": gen, "layers": mode.large_layers, "full_layers": full_layers,
            "layer_bytes_measured": measured_layers, "layer_bytes_predicted": predicted_layer,
            "layer_bytes_exact": all(v == predicted_layer for v in measured_layers.values()),
            "tensor_bytes_measured": measured_total,
            "full_tensor_bytes_extrapolated": outside + full_layers * max(measured_layers.values()),
            "full_tensor_bytes_plan": checkpoint_estimate(mode.large, recipe).tensor_bytes["total"],
            "full_bytes_plan": conv["plan_bytes_full_depth"]}


STAGE_FUNCTIONS = {"synth": synth_stage, "int4": lambda run: scheme_stage(run, "int4", load=True),
                   "int8": lambda run: scheme_stage(run, "int8", load=True),
                   "nf4": lambda run: scheme_stage(run, "nf4", load=False), "gptq": gptq_stage,
                   "large": large_stage}


# --- the report ------------------------------------------------------------------------------------------------

def write_reports(report: dict, out: Path) -> None:
    from pixtral_quant.diagnostics.full_size_report import checks, render

    report["checks"] = [{"check": what, "passed": ok} for what, ok in checks(report)]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    out.with_suffix(".md").write_text(render(report))


def previous(out: Path, mode: Mode, fresh: bool) -> dict:
    """The report to continue: the JSON already there for the same mode, else a new one."""
    path = out.with_suffix(".json")
    if not fresh and path.exists():
        report = json.loads(path.read_text())
        if report.get("mode") == mode.name:
            return report
    return {"mode": mode.name, "stages": {}}


def selected(args) -> list[str]:
    wanted = list(args.only or STAGES)
    return [s for s in STAGES if s in wanted and s not in (args.skip or ())]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="every stage on tiny shapes in a temporary directory")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "full-size-cpu", help="report path, no suffix")
    ap.add_argument("--work", type=Path, help="scratch directory (default: /tmp/full-size-cpu; --tiny: a temporary "
                    "one)")
    ap.add_argument("--only", nargs="+", choices=STAGES, help="run these stages (even if done)")
    ap.add_argument("--skip", nargs="+", choices=STAGES, help="do not run these stages")
    ap.add_argument("--fresh", action="store_true", help="ignore the existing JSON (default: keep its ok stages)")
    ap.add_argument("--keep", action="store_true", help="keep the synthesized source at the end")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--repredict", action="store_true", help="run no stage: recompute the conversion-RSS and "
                    "load/generate predictions of the recorded stages from what they measured (import baseline, "
                    "calibration tokens, kernel), after a fix of a model, and rewrite the report")
    ap.add_argument("--verbose", action="store_true", help="third-party logging and warnings on (as the CLI's)")
    args = ap.parse_args(argv)
    from pixtral_quant.cli.quiet import silenced

    with silenced(args.verbose):  # torch's and torchao's import-time logging (the jobs run the CLI's way)
        return run_main(args)


def run_main(args) -> int:
    mode = TINY if args.tiny else Mode()
    if args.repredict:
        report = previous(args.out, mode, fresh=False)
        repredict(report, mode)
        write_reports(report, args.out)
        return 0
    with tempfile.TemporaryDirectory(prefix="full-size-") as tmp:
        work = args.work or (Path(tmp) if args.tiny else Path("/tmp/full-size-cpu"))
        work.mkdir(parents=True, exist_ok=True)
        return run_all(mode, work, args)


def run_all(mode: Mode, work: Path, args) -> int:
    report = previous(args.out, mode, args.fresh)
    todo = [s for s in selected(args) if args.only or report["stages"].get(s, {}).get("status") != "ok"]
    need = max([disk_needs(mode)[s] for s in todo], default=0) + DISK_MARGIN
    free = shutil.disk_usage(work).free + dir_bytes(work)
    if free < need:
        print(f"error: the stages {' '.join(todo)} need {need / 1e9:.1f} GB of free disk in {work} at their "
              f"fullest; {free / 1e9:.1f} GB free. Free disk or pass --work on a larger file system.",
              file=sys.stderr)
        return 2
    report["machine"] = machine(work)
    report["disk_need_bytes"] = need
    w = mode.workload
    report["workload"] = (f"one {w.image_width}x{w.image_height} image + {w.text_tokens} text tokens, "
                          f"{w.new_tokens} new tokens")
    run = Run(mode, work, args.out, report, args.quiet)
    for i, name in enumerate(todo):
        run.stage(name, STAGE_FUNCTIONS[name])
        if not args.keep and not set(todo[i + 1:]) & set(NEEDS_SOURCE):
            run.drop("source")  # no stage left converts it: free its disk for the next ones
    if not args.keep:
        run.drop("source", "native")
    write_reports(report, args.out)
    stages = [report["stages"].get(s, {}) for s in selected(args)]
    passed = all(s.get("status") == "ok" for s in stages) and all(c["passed"] is not False for c in report["checks"])
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
