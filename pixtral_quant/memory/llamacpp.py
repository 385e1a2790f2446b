"""`pixtral-quant plan --runtime llama.cpp`: the GGUF files a gguf-<type> recipe writes (byte-exact, from the config
and the tokenizer: export/gguf/size.py) and the GPU memory llama.cpp needs to run them with every layer offloaded.

llama.cpp's placement (src/llama-model.cpp, tools/mtmd/clip.cpp at 0c1e57098), which is what the 8 GB promise uses:
- token_embd stays in host memory (llama.cpp always keeps the input layer on the CPU: a row lookup);
- every other text tensor (blocks, output norm, output.weight) on the GPU;
- the mmproj (vision tower + projector) on the GPU, loaded once (no offloading between images);
- the KV cache on the GPU, F16 (llama.cpp's default cache type), sized for the context;
- two compute buffers, both reserved at start-up and kept: the decoder's, for one micro-batch of N_UBATCH tokens,
  and the vision encoder's, for the largest image. Flash attention (llama.cpp's `auto` on CUDA) means no
  [heads, T, T] score matrix in either.
The compute buffers are a model of ggml's graph allocator (the tensors alive together at the widest point), not a
measurement: no GPU was lent to check them (reports/gguf-tiny.md). Terms, in float32 as ggml computes:
- decoder: the logits of the micro-batch [vocab, N_UBATCH] (llama.cpp reserves for every position returning
  logits), plus the MLP's gate/up/product [N_UBATCH, intermediate] and the residual pair [N_UBATCH, hidden];
- vision: patches P of the image: residual + normed [P, Hv], the MLP's three [P, Iv], the projector's [P, H] in
  and out.
"""

from __future__ import annotations

from dataclasses import asdict

from .runtime import image_tokens
from .settings import Workload, reserve_for

N_UBATCH = 512  # llama.cpp's default micro-batch (llama_context_default_params().n_ubatch)
F32, F16 = 4, 2
HOST_TENSORS = ("token_embd.weight",)  # kept in host memory by llama.cpp


def kv_cache_bytes(text_config, context: int) -> int:
    """F16 K and V of every layer for `context` tokens."""
    c = text_config
    return 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * F16 * context


def decoder_compute_bytes(text_config, ubatch: int = N_UBATCH) -> int:
    """The decoder's compute buffer (module docstring), float32."""
    c = text_config
    return F32 * ubatch * (c.vocab_size + 3 * c.intermediate_size + 2 * c.hidden_size)


def vision_compute_bytes(config, patches: int) -> int:
    """The vision encoder's compute buffer for an image of `patches` patches (module docstring), float32."""
    v = config.vision_config
    return F32 * patches * (2 * v.hidden_size + 3 * v.intermediate_size + 2 * config.text_config.hidden_size)


def tokens_needed(config, workload: Workload) -> dict:
    """Image patches and tokens, prompt and context of the workload (llama.cpp's grid equals mistral-common's for
    sides that are multiples of 16: docs/notes-gguf.md)."""
    img = image_tokens(config.vision_config, workload.image_width, workload.image_height)
    prompt = workload.images * img.tokens + workload.text_tokens
    return {"patches": img.patches, "image_tokens": workload.images * img.tokens, "prompt": prompt,
            "context": workload.context or prompt + workload.new_tokens}


def gpu_plan(config, sizes, card: int, workload: Workload, reserve: int | None = None) -> dict:
    """GPU bytes by term, their sum and whether it fits `card` less the CUDA reserve. sizes: size.GgufSizes."""
    tok = tokens_needed(config, workload)
    host = sum(b for name, (_, b) in sizes.text_tensors.items() if name in HOST_TENSORS)
    terms = {"text weights (GPU)": sum(b for _, b in sizes.text_tensors.values()) - host,
             "mmproj weights": sum(b for _, b in sizes.mmproj_tensors.values()),
             "KV cache (F16)": kv_cache_bytes(config.text_config, tok["context"]),
             "decoder compute buffer": decoder_compute_bytes(config.text_config),
             "vision compute buffer": vision_compute_bytes(config, tok["patches"]) if workload.images else 0}
    reserve = reserve_for(card) if reserve is None else reserve
    total = sum(terms.values())
    return {"tokens": tok, "terms": terms, "gpu_bytes": total, "host_bytes": host, "card_bytes": card,
            "reserve_bytes": reserve, "limit_bytes": card - reserve, "fits": total <= card - reserve,
            "workload": asdict(workload)}


def llamacpp_report(model, recipe, *, gpu_memory: str | None = None, reserve: str | None = None,
                    workload: dict | None = None) -> dict:
    """The plan of a gguf-<type> recipe for `model` (None: the recipe's promise model) on a card: file sizes
    (byte-exact with what convert writes) and the GPU memory of llama.cpp's placement."""
    from ..config import Gguf
    from ..errors import UsageError
    from ..export.gguf import size
    from ..recipes import load_recipe
    from .report import open_model, resolve_target

    recipe = load_recipe(recipe) if not hasattr(recipe, "scheme") else recipe
    if not isinstance(recipe.scheme, Gguf):
        raise UsageError(f"--runtime llama.cpp plans GGUF files; recipe {recipe.name} writes {recipe.scheme.name}",
                         where="--runtime", fix="use a gguf-<type> recipe, or --runtime transformers")
    target, card, res = resolve_target(recipe, gpu_memory, reserve, workload)
    src = open_model(model or target.model)
    tokenizer = src.tokenizer or _shipped_tokenizer(model or target.model)
    if tokenizer is None:
        raise UsageError("the GGUF sizes need the model's Mistral tokenizer (its token list is in the file)",
                         where=src.source, fix="point --model at a folder holding tekken.json or tokenizer.model.v*")
    skeleton = size.skeleton(size.shapes_only(src.config, tokenizer))  # metadata measured once, then arithmetic
    imatrix = recipe.scheme.imatrix
    sizes = skeleton.sizes(recipe.scheme.type, recipe.scheme.mmproj_type, has_imatrix=imatrix)
    plan = gpu_plan(src.config, sizes, card, target.workload, res)
    return {"model": src.source, "recipe": recipe.name, "scheme": recipe.scheme.name, "runtime": "llama.cpp",
            "files": _files(sizes), **plan,
            "proposal": None if plan["fits"] else _proposal(src.config, skeleton, imatrix, card, target.workload, res)}


# Smaller outputs to try when a recipe's files do not fit, best quality first: (text type, mmproj type).
ALTERNATIVES = (("q4_k_m", "q8_0"), ("q4_k_s", "f16"), ("q4_k_s", "q8_0"), ("iq4_xs", "f16"), ("iq4_xs", "q8_0"),
                ("q3_k_l", "f16"), ("q3_k_l", "q8_0"), ("q3_k_m", "f16"), ("q3_k_m", "q8_0"), ("q2_k", "q8_0"))


def _proposal(config, skeleton, imatrix: bool, card: int, workload: Workload, reserve: int | None) -> dict | None:
    """The first of ALTERNATIVES whose GPU memory fits the card, or None."""
    for text_type, mmproj_type in ALTERNATIVES:
        sizes = skeleton.sizes(text_type, mmproj_type, has_imatrix=imatrix)
        plan = gpu_plan(config, sizes, card, workload, reserve)
        if plan["fits"]:
            return {"type": text_type, "mmproj_type": mmproj_type, "scheme": f"gguf-{text_type}",
                    "gpu_bytes": plan["gpu_bytes"], "files": _files(sizes)}
    return None


def _files(sizes) -> dict:
    return {"text_bytes": sizes.text_bytes, "mmproj_bytes": sizes.mmproj_bytes,
            "text_types": _type_counts(sizes.text_tensors)}


def _shipped_tokenizer(model):
    """The mistral-common tokenizer file of a shipped config-only model (assets.SHIPPED_TOKENIZERS), or None."""
    from ..assets import SHIPPED_TOKENIZERS
    from ..loading.tokenizer import bundled_tokenizer_path

    kind = SHIPPED_TOKENIZERS.get(str(model))
    return bundled_tokenizer_path(kind) if kind else None


def _type_counts(tensors: dict) -> dict[str, int]:
    """GGML type → number of tensors of that type."""
    counts: dict[str, int] = {}
    for kind, _ in tensors.values():
        counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))
