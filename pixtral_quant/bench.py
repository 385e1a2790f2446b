"""`pixtral-quant bench CHECKPOINT`: load a (quantized) checkpoint with plain transformers, then time the prefill
of one image + text prompt and the decode, and record peak memory (torch-allocated on a GPU, process RSS on
the CPU).

    from pixtral_quant.bench import bench
    result = bench("out/", workload=Workload(text_tokens=64, new_tokens=16, image_width=256, image_height=256))

The prompt is synthetic (random pixels, the image-token layout Pixtral uses, random text ids) so any
checkpoint can be timed without data. Prefill = generate() with one new token; decode tok/s =
(new_tokens − 1) / (time of generate(new_tokens) − prefill); both after a small warm-up generation, each the
median of `repeats` runs (config.BENCH_REPEATS; every run's seconds are in the result too).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from .config import BENCH_REPEATS
from .diagnostics.measure import peak_rss
from .memory.placement import place
from .memory.runtime import image_tokens
from .memory.settings import Placement, Workload

DEFAULT_WORKLOAD = Workload()  # one 1024x1024 image + 1024 text tokens, 128 new tokens
WARMUP = Workload(image_width=64, image_height=64, text_tokens=8, new_tokens=2)
FALLBACK_IMAGE_IDS = {"image_break_token_id": 12, "image_end_token_id": 13}  # tekken's, when no tokenizer is found
TEXT_IDS = (1000, 30000)  # random prompt text ids are drawn from this range (inside every Pixtral vocabulary)


def device_for(name: str | None) -> torch.device:
    """'cuda' when asked or (None) when available, else 'cpu'."""
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def image_ids(path: Path) -> dict[str, int]:
    """[IMG_BREAK] / [IMG_END] ids from the checkpoint's Mistral tokenizer, else tekken's."""
    from .loading.tokenizer import find_tokenizer, image_token_ids

    found = find_tokenizer(Path(path))
    ids = image_token_ids(found[1]) if found and found[0] == "mistral" else None
    return ids or FALLBACK_IMAGE_IDS


def synthetic_prompt(config, ids: dict, workload: Workload, device, dtype, seed: int = 0) -> dict:
    """input_ids [1, T] (BOS, image rows of [IMG]×cols + [IMG_BREAK], last one [IMG_END], text), pixel_values
    [images, 3, H, W] and image_sizes, on `device`."""
    gen = torch.Generator().manual_seed(seed)
    img = image_tokens(config.vision_config, workload.image_width, workload.image_height)
    row = [config.image_token_index] * img.cols + [ids["image_break_token_id"]]
    block = row * img.rows
    block[-1] = ids["image_end_token_id"]
    text = torch.randint(*TEXT_IDS, (workload.text_tokens,), generator=gen).tolist()
    input_ids = [1] + block * workload.images + text
    patch = config.vision_config.patch_size
    h, w = img.rows * patch, img.cols * patch
    pixels = torch.randn(workload.images, 3, h, w, generator=gen)
    return {"input_ids": torch.tensor([input_ids], device=device),
            "attention_mask": torch.ones(1, len(input_ids), dtype=torch.long, device=device),
            "pixel_values": pixels.to(device=device, dtype=dtype),
            "image_sizes": torch.tensor([[h, w]] * workload.images, device=device)}


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def timed_generate(model, inputs: dict, new_tokens: int, device) -> float:
    """Seconds of one greedy generate() of exactly `new_tokens` tokens."""
    _sync(device)
    start = time.perf_counter()
    model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    _sync(device)
    return time.perf_counter() - start


def load(path, device, dtype) -> tuple[object, float]:
    """(model, seconds): LlavaForConditionalGeneration.from_pretrained on `device`, eval mode."""
    from transformers import LlavaForConditionalGeneration

    start = time.perf_counter()
    model = LlavaForConditionalGeneration.from_pretrained(path, dtype=dtype, device_map={"": str(device)}).eval()
    _sync(device)
    return model, time.perf_counter() - start


def bench(checkpoint, *, device: str | None = None, dtype: str = "bfloat16", workload: Workload = DEFAULT_WORKLOAD,
          placement: Placement | None = None, seed: int = 0, repeats: int = BENCH_REPEATS) -> dict:
    """Load `checkpoint`, apply `placement`, time prefill and decode of `workload` (medians of `repeats` runs);
    a JSON-ready dict."""
    dev, torch_dtype = device_for(device), getattr(torch, dtype)
    model, load_s = load(checkpoint, dev, torch_dtype)
    load_peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else None
    moved = place(model, placement or Placement(), dev)
    result = measure_generation(model, image_ids(Path(checkpoint)), dev, torch_dtype, workload, seed, repeats)
    return {"checkpoint": str(checkpoint), "dtype": dtype, "quantization": _quant_method(model),
            "kernel": _kernel(model), "placement": moved, "load_seconds": load_s,
            "load_peak_gpu_allocated": load_peak, **result}


def measure_generation(model, ids: dict, dev, torch_dtype, workload: Workload, seed: int = 0,
                       repeats: int = BENCH_REPEATS) -> dict:
    """Warm up, then time generate() with 1 and with workload.new_tokens new tokens, `repeats` times each (the
    medians are the figures); peaks of that part (GPU: torch-allocated since the reset; CPU: the process's peak
    RSS, load included)."""
    warm = synthetic_prompt(model.config, ids, WARMUP, dev, torch_dtype, seed)
    timed_generate(model, warm, WARMUP.new_tokens, dev)
    inputs = synthetic_prompt(model.config, ids, workload, dev, torch_dtype, seed)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    prefills = [timed_generate(model, inputs, 1, dev) for _ in range(repeats)]
    totals = [timed_generate(model, inputs, workload.new_tokens, dev) for _ in range(repeats)]
    prefill, total = statistics.median(prefills), statistics.median(totals)
    prompt = int(inputs["input_ids"].shape[1])
    cuda = dev.type == "cuda"
    return {"device": str(dev), "gpu": torch.cuda.get_device_name(dev) if cuda else None,
            "workload": asdict(workload), "prompt_tokens": prompt, "prefill_seconds": prefill,
            "prefill_tokens_per_second": prompt / prefill,
            "decode_tokens_per_second": (workload.new_tokens - 1) / max(total - prefill, 1e-9),
            "generate_seconds": total, "repeats": repeats, "prefill_seconds_runs": prefills,
            "generate_seconds_runs": totals, "peak_gpu_allocated": torch.cuda.max_memory_allocated() if cuda else None,
            "peak_rss": peak_rss()}


def _quant_method(model) -> str | None:
    qc = getattr(model.config, "quantization_config", None)
    method = (qc.get("quant_method") if isinstance(qc, dict) else getattr(qc, "quant_method", None)) if qc else None
    return None if method is None else str(getattr(method, "value", method))


def _kernel(model) -> str:
    """Class of the first decoder Linear: which kernel the checkpoint runs on."""
    return type(model.model.language_model.layers[0].mlp.down_proj).__name__


def with_workload(workload: Workload, **changes) -> Workload:
    return replace(workload, **{k: v for k, v in changes.items() if v is not None})
