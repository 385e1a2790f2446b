#!/usr/bin/env python
"""The child side of scripts/full_size_cpu.py: one job per fresh process, so each peak RSS is that job's alone.

    python scripts/full_size_jobs.py '{"kind": "synth", "config": "tiny", "out": "/tmp/s", ...}'

The job prints one line, measure.MARK + JSON: baseline_rss (VmHWM after the imports), peak_rss (VmHWM at the
end: this process's exact high-water mark), seconds, result. Jobs (JOBS):
  synth          pixtral_quant.synth.synthesize (one tensor in memory at a time), then optionally:
                 sample_to: open the (native) result with the project's loader: tensor count, a hash of the
                 runtime names, a few tensors saved to a small file for the HF comparison;
                 compare_with: the same of the HF result, and those saved tensors bit-equal to it (q/k through
                 the RoPE permutation the native loader applies)
  convert        pixtral_quant.convert.convert, timed per reporter bar and, for GPTQ, per phase (below)
  generate       load with plain transformers (bench.load), greedy generation after one image: prefill, decode
                 tok/s, finite logits, the same tokens twice

GPTQ phase timing without touching pipeline/ / capture.py: in this child only, the functions convert calls are
wrapped (capture.load_layer = read, GptqSolver.__init__ + finish = solve, GptqSolver.add_batch = Hessian,
Journal.save = write, export.checkpoint.write_tensors = assembly of the shards); the reporter's bars give the
wall time of each layer, the rest of a bar is the forward passes that capture the Linears' inputs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pixtral_quant.diagnostics.measure import MARK, peak_rss  # noqa: E402


def current_rss() -> int:
    """VmRSS of this process now (bytes)."""
    with open("/proc/self/status") as f:
        return int(next(ln for ln in f if ln.startswith("VmRSS:")).split()[1]) * 1024


def names_hash(names) -> str:
    return "sha256:" + hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()


# --- synth and the native loader at full size ---------------------------------------------------------------

def synth_job(job: dict) -> dict:
    from pixtral_quant.synth import Outliers, synthesize

    r = synthesize(job["config"], job["out"], layers=job.get("layers"), fmt=job.get("fmt", "hf"),
                   outliers=Outliers(job["outliers"]) if job.get("outliers") else None,
                   max_shard_bytes=job.get("max_shard_bytes"))
    disk = sum(p.stat().st_size for p in Path(job["out"]).iterdir() if p.is_file())
    out = {"format": r.format, "files": len(r.files), "tensor_bytes": r.tensor_bytes, "params": r.params,
           "layers": r.layers, "disk_bytes": disk, "synth_seconds": r.seconds}
    # The loader checks run in the same process, after the synthesis (one process fewer; they read a few tensors)
    if job.get("sample_to"):
        out["check"] = native_sample_job({"dir": job["out"], "save": job["sample_to"]})
    if job.get("compare_with"):
        out["check"] = hf_compare_job({"dir": job["out"], "sample": job["compare_with"]})
    return out


def sample_names(tensors: dict, layers: int) -> list[str]:
    """A few runtime names to compare bit for bit: the first and last decoder layer's q/k (RoPE permuted),
    v/o/down, a norm, the vision tower's first and the projector's tensors, the final norm."""
    last = layers - 1
    wanted = [f"model.language_model.layers.{i}.{m}.weight" for i in (0, last)
              for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.down_proj",
                        "input_layernorm")]
    wanted.append("model.language_model.norm.weight")
    vision = sorted(n for n in tensors if n.startswith("model.vision_tower."))[:2]
    projector = sorted(n for n in tensors if n.startswith("model.multi_modal_projector."))[:1]
    return [n for n in wanted if n in tensors] + vision + projector


def native_sample_job(job: dict) -> dict:
    from safetensors.torch import save_file

    from pixtral_quant.loading import open_checkpoint
    from pixtral_quant.loading.checkpoint import read_tensors

    ckpt = open_checkpoint(job["dir"], require_tokenizer=False)
    names = sample_names(ckpt.tensors, ckpt.config.text_config.num_hidden_layers)
    tensors = read_tensors(ckpt, names)
    save_file({n: t.contiguous() for n, t in tensors.items()}, job["save"])
    return {"format": ckpt.format, "tensors": len(ckpt.tensors), "names_hash": names_hash(ckpt.tensors),
            "sampled": names, "sampled_bytes": sum(t.numel() * t.element_size() for t in tensors.values())}


def hf_compare_job(job: dict) -> dict:
    """The HF copy against what native-sample saved. The native file holds the same random tensor under the
    native name; the loader turns it into the runtime (HF) layout, q/k through the RoPE permutation, so the
    expected value is names.native_to_runtime of the HF tensor."""
    import torch
    from safetensors.torch import load_file

    from pixtral_quant.loading import names, open_checkpoint
    from pixtral_quant.loading.checkpoint import read_tensors

    ckpt = open_checkpoint(job["dir"], require_tokenizer=False)
    native = load_file(job["sample"])
    hf = read_tensors(ckpt, sorted(native))
    equal = {}
    for n, t in sorted(hf.items()):
        native_name = names.hf_to_native_name(names.runtime_to_checkpoint(n))[0]
        expected = names.native_to_runtime(native_name, t, ckpt.config)[1]
        equal[n] = bool(torch.equal(native[n], expected))
    return {"format": ckpt.format, "tensors": len(ckpt.tensors), "names_hash": names_hash(ckpt.tensors),
            "bit_equal": equal, "all_bit_equal": all(equal.values()),
            "rope_permuted": sorted(n for n in equal if "q_proj" in n or "k_proj" in n)}


# --- convert, timed ------------------------------------------------------------------------------------------

class Clock:
    """Seconds per (phase, key), accumulated by the wrappers installed in `wrap`."""

    def __init__(self):
        self.seconds: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.key: Callable[[tuple], str] = lambda args: ""

    def wrap(self, owner, attr: str, phase: str, key: Callable[[tuple], str]) -> None:
        original = getattr(owner, attr)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[phase][key(args)] += time.perf_counter() - start

        setattr(owner, attr, timed)


class BarReporter:
    """convert's Reporter interface: the wall time of each bar (vision capture, each layer, lm_head)."""

    def __init__(self):
        self.bars: list[tuple[str, float]] = []
        self.current, self.started = "", 0.0

    def log(self, message) -> None:
        """The plan and messages are not needed here."""

    def task(self, description: str, total: int):
        self.current, self.started = description, time.perf_counter()
        return lambda: None

    def done(self) -> None:
        self.bars.append((self.current, time.perf_counter() - self.started))


def install_clock(reporter: BarReporter) -> Clock:
    """Wrap what convert calls for GPTQ so each phase is timed (see the module docstring)."""
    from pixtral_quant import capture
    from pixtral_quant.export import checkpoint
    from pixtral_quant.export.journal import Journal
    from pixtral_quant.schemes.gptq import GptqSolver

    clock = Clock()
    bar = lambda args: reporter.current  # noqa: E731 - the bar open while the solver runs
    clock.wrap(capture, "load_layer", "read", lambda args: f"layer-{args[2]:05d}")
    clock.wrap(GptqSolver, "__init__", "solve", bar)
    clock.wrap(GptqSolver, "finish", "solve", bar)
    clock.wrap(GptqSolver, "add_batch", "hessian", bar)
    clock.wrap(Journal, "save", "write", lambda args: args[1])
    clock.wrap(checkpoint, "write_tensors", "assembly", lambda args: "shards")
    return clock


def convert_job(job: dict) -> dict:
    from pixtral_quant.config import recipe_from_dict
    from pixtral_quant.convert import convert

    reporter = BarReporter()
    clock = install_clock(reporter) if job.get("timing") else None
    start = time.perf_counter()
    result = convert(job["model"], recipe_from_dict(job["recipe"]), job["out"], overwrite=True, reporter=reporter)
    return {"bytes_after": result.bytes_after, "bytes_before": result.bytes_before, "seconds": result.seconds,
            "wall_seconds": time.perf_counter() - start, "spilled": result.spilled,
            "calibration_tokens": sum(result.stats.tokens) if result.stats is not None else None,
            "calibration_samples": len(result.stats.tokens) if result.stats is not None else None,
            "bars": reporter.bars,
            "phases": None if clock is None else {p: dict(v) for p, v in clock.seconds.items()}}


# --- load and generate ---------------------------------------------------------------------------------------

def _generate(model, inputs: dict, new_tokens: int) -> tuple[list[int], bool, float]:
    """(generated ids, every logit finite, seconds) of one greedy generate()."""
    import torch

    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                             output_logits=True, return_dict_in_generate=True)
    seconds = time.perf_counter() - start
    ids = out.sequences[0, inputs["input_ids"].shape[1]:].tolist()
    # Raw logits: the processed scores hold -inf by design (min_new_tokens masks the end-of-sequence token).
    return ids, all(bool(torch.isfinite(x).all()) for x in out.logits), seconds


def generate_job(job: dict) -> dict:
    """bench's load and synthetic prompt; a warm-up, a prefill-only run, then the generation twice."""
    import torch

    from pixtral_quant.bench import WARMUP, _kernel, _quant_method, image_ids, load, synthetic_prompt
    from pixtral_quant.memory.settings import Workload

    dev, dtype = torch.device("cpu"), torch.bfloat16
    workload = Workload(**job["workload"])
    model, load_s = load(job["checkpoint"], dev, dtype)
    after_load = {"rss": current_rss(), "peak_rss": peak_rss()}
    ids = image_ids(Path(job["checkpoint"]))
    _generate(model, synthetic_prompt(model.config, ids, WARMUP, dev, dtype), WARMUP.new_tokens)
    inputs = synthetic_prompt(model.config, ids, workload, dev, dtype, seed=job.get("seed", 0))
    _, _, prefill = _generate(model, inputs, 1)
    first, finite1, total = _generate(model, inputs, workload.new_tokens)
    second, finite2, _ = _generate(model, inputs, workload.new_tokens)
    n = workload.new_tokens
    return {"load_seconds": load_s, "kernel": _kernel(model), "quantization": _quant_method(model),
            "after_load": after_load, "prompt_tokens": int(inputs["input_ids"].shape[1]),
            "prefill_seconds": prefill, "generate_seconds": total,
            # None when the n-token run was not measurably longer than the prefill-only one (tiny models)
            "decode_tokens_per_second": (n - 1) / (total - prefill) if total > prefill else None,
            "tokens_per_second": n / total, "tokens": first, "finite": finite1 and finite2,
            "deterministic": first == second}


# --- the child's entry point -----------------------------------------------------------------------------------

def _imports() -> None:
    """What every job imports before its work (the baseline): the pipeline and transformers' Pixtral code."""
    from pixtral_quant.diagnostics.measure import import_pipeline

    import_pipeline()


JOBS: dict[str, Callable[[dict], dict]] = {"synth": synth_job, "convert": convert_job, "generate": generate_job}


def run(job: dict) -> dict:
    """In the child: import what every job needs, note the baseline, run the job, report the peaks."""
    _imports()
    baseline = peak_rss()
    start = time.perf_counter()
    result = JOBS[job["kind"]](job)
    return {"baseline_rss": baseline, "peak_rss": peak_rss(), "seconds": time.perf_counter() - start,
            "result": result}


if __name__ == "__main__":
    print(MARK + json.dumps(run(json.loads(sys.argv[1]))), flush=True)
