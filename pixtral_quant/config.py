"""What a conversion is asked to do, as frozen dataclasses: one config per scheme, the targets, the calibration
data, the validation thresholds, and the Recipe holding them. This module is the only place defaults live;
recipes (recipes.py) and CLI flags only override fields, and the manifest stores `Recipe.to_dict()`.

`from_dict` rejects unknown keys (a typo in a recipe is an error, never a silently ignored option).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from .errors import UsageError, did_you_mean

# What an optional target (lm_head, vision tower, projector) may ask for; "auto": gptq-mixed's allocation decides.
PRECISIONS = (None, "int8", "int4", "auto")

# Optional-target precision → (memory/storage.py format kind, bits) the target is sized in, per storage family. A
# GPTQ checkpoint has one bit width for every quantized Linear (quantization_config.bits), so an int8 lm_head in
# an int4 GPTQ model is only expressible with per-module overrides (GPTQModel's `dynamic`); it is sized all the same.
GPTQ_TARGET_FORMATS = {"int4": ("gptq", 4), "int8": ("gptq", 8)}
BNB_TARGET_FORMATS = {"int8": ("bnb-int8", 8), "int4": ("bnb-nf4", 4)}
# Why the lm_head of a GPTQ scheme is quantized so (the plan's reason column).
GPTQ_HEAD_NOTE = "GPTQ on the final norm's outputs, after the last layer"


class _SchemeFacts:
    """What the toolkit knows about a scheme besides its options, read as `recipe.scheme.<fact>`: ClassVars, so
    neither dataclass fields nor part of to_dict / from_dict. Each scheme config overrides the facts that differ
    from these defaults (the torchao pattern: frozen config → handler in schemes/registry.py).

    storage: memory/storage.FORMAT_TENSORS kind of its decoder Linears (None: per Linear from an allocation, or
        not a checkpoint); precision: their precision ('int4' / 'int8'; None: mixed or not a checkpoint) — one
        checkpoint has one quantization_config, so an optional target can only take it (memory/changes.py);
    optional_targets: {component: precision} convert writes and transformers loads back (plan.py refuses the
        rest); target_notes: {component: why its method differs from the scheme name} for the plan's reasons;
        decoder_reason: the plan's reason for a quantized decoder Linear;
    target_formats: {precision: (format kind, bits)} an optional target is sized in (memory/storage.format_for:
        any combination, even the ones convert refuses);
    four_bit: the name of the 4-bit scheme of the same family (memory/changes.py's "decoder INT4" change);
    data_free: the scheme of the same bits and layout that needs no calibration (a GPTQ recipe's RTN twin, for
        memory and load measurements whose numbers do not depend on the solver: scripts/gpu_check.py,
        scripts/full_size_cpu.py); None: the scheme itself;
    allocates: picks a setting per Linear (gptq-mixed: scheme.allocation, memory/inventory.py);
    calibrated: GPTQ-solved from calibration activations in convert's layer loop (GGUF's optional importance
        matrix is its handler's needs_calibration);
    row_blocked: quantizes schemes.rtn.ROW_BLOCK output rows at a time (diagnostics/conversion.py);
    transient_bytes_per_param: the quantizer's temporaries per parameter of the largest Linear (bytes;
        diagnostics/conversion.py): RTN holds the float32 weight, int32 codes, their transpose and two int64 packing
        buffers at once; GPTQ the float32 working copy, the solver's error and dequantized copies; None: never
        measured (gptq-mixed keeps a solution per candidate; GGUF quantizes in llama.cpp's process)."""

    storage: ClassVar[str | None] = None
    precision: ClassVar[str | None] = None
    optional_targets: ClassVar[dict[str, str]] = {}
    target_notes: ClassVar[dict[str, str]] = {}
    decoder_reason: ClassVar[str] = "decoder Linear"
    target_formats: ClassVar[dict[str, tuple[str, int]]] = {}
    four_bit: ClassVar[str | None] = None
    data_free: ClassVar[str | None] = None
    allocates: ClassVar[bool] = False
    calibrated: ClassVar[bool] = False
    row_blocked: ClassVar[bool] = False
    transient_bytes_per_param: ClassVar[int | None] = None


@dataclass(frozen=True)
class _GptqSolverFields(_SchemeFacts):
    """Settings of GPTQModel's solver shared by every GPTQ scheme. act_group_aware: GPTQModel's group-aware
    reordering (keeps the plain g_idx layout); desc_act: act-order (g_idx permuted, slower kernels);
    damp_percent: Hessian dampening (fraction of its mean diagonal)."""

    sym: bool = True
    desc_act: bool = False
    act_group_aware: bool = True
    damp_percent: float = 0.01
    block_size: int = 128
    true_sequential: bool = True


@dataclass(frozen=True)
class _GptqFields(_GptqSolverFields):
    """Fields of the uniform GPTQ schemes: one bit width and group size for every quantized Linear."""

    bits: int = 4
    group_size: int = 128

    storage: ClassVar[str] = "gptq"
    target_formats: ClassVar[dict] = GPTQ_TARGET_FORMATS
    target_notes: ClassVar[dict] = {"lm_head": GPTQ_HEAD_NOTE}
    calibrated: ClassVar[bool] = True
    transient_bytes_per_param: ClassVar[int] = 16


@dataclass(frozen=True)
class GptqInt4(_GptqFields):
    """W4A16 GPTQ (GPTQModel's solver), GPTQ v1 checkpoint. group 128 + sym is what Marlin kernels take.
    The lm_head at the scheme's own bits (one `bits` per GPTQ v1 config): transformers/optimum replace the
    Linears whose names start with block_name_to_quantize and end with an entry of modules_in_block_to_quantize,
    so the lm_head needs block "" plus an "lm_head" entry (schemes/gptq_format.py); vLLM reads `lm_head: true`.
    The vision tower / projector would need a second precision: not expressible."""

    name: ClassVar[str] = "gptq-int4"
    data_free: ClassVar[str] = "rtn-int4"
    precision: ClassVar[str] = "int4"
    optional_targets: ClassVar[dict] = {"lm_head": "int4"}


@dataclass(frozen=True)
class GptqInt8(_GptqFields):
    """W8A16 GPTQ; group_size -1 = per output channel."""

    name: ClassVar[str] = "gptq-int8"
    data_free: ClassVar[str] = "rtn-int8"
    bits: int = 8
    precision: ClassVar[str] = "int8"
    optional_targets: ClassVar[dict] = {"lm_head": "int8"}
    four_bit: ClassVar[str] = "gptq-int4"


@dataclass(frozen=True)
class _RtnFields(_SchemeFacts):
    bits: int = 4
    group_size: int = 128
    sym: bool = True

    storage: ClassVar[str] = "gptq"
    target_formats: ClassVar[dict] = GPTQ_TARGET_FORMATS
    target_notes: ClassVar[dict] = {"lm_head": "round-to-nearest"}
    row_blocked: ClassVar[bool] = True
    transient_bytes_per_param: ClassVar[int] = 24


@dataclass(frozen=True)
class RtnInt4(_RtnFields):
    """Round-to-nearest INT4 in the GPTQ v1 format (data-free baseline)."""

    name: ClassVar[str] = "rtn-int4"
    precision: ClassVar[str] = "int4"
    optional_targets: ClassVar[dict] = {"lm_head": "int4"}


@dataclass(frozen=True)
class RtnInt8(_RtnFields):
    """Round-to-nearest INT8 in the GPTQ v1 format (data-free baseline)."""

    name: ClassVar[str] = "rtn-int8"
    bits: int = 8
    precision: ClassVar[str] = "int8"
    optional_targets: ClassVar[dict] = {"lm_head": "int8"}
    four_bit: ClassVar[str] = "rtn-int4"


@dataclass(frozen=True)
class _BnbFacts(_SchemeFacts):
    """Facts shared by the bitsandbytes schemes: the optional targets are sized in int8 / nf4."""

    target_formats: ClassVar[dict] = BNB_TARGET_FORMATS
    transient_bytes_per_param: ClassVar[int] = 8


@dataclass(frozen=True)
class BnbInt8(_BnbFacts):
    """bitsandbytes LLM.int8: int8 rows with one absmax scale per output row; threshold: activation
    magnitude above which LLM.int8 runs the column in 16 bit at inference. Its lm_head loads in transformers
    but not in vLLM (docs/vllm.md)."""

    name: ClassVar[str] = "bnb-int8"
    threshold: float = 6.0

    storage: ClassVar[str] = "bnb-int8"
    bits: ClassVar[int] = 8
    precision: ClassVar[str] = "int8"
    optional_targets: ClassVar[dict] = {"lm_head": "int8", "vision_tower": "int8", "projector": "int8"}
    target_notes: ClassVar[dict] = {"lm_head": "transformers loads it; vLLM cannot (docs/vllm.md): keep bf16 for vLLM"}
    four_bit: ClassVar[str] = "bnb-nf4"


@dataclass(frozen=True)
class BnbNf4(_BnbFacts):
    """bitsandbytes NF4 (blocks of `blocksize` weights, one absmax each); double_quant quantizes the absmaxes.
    No optional target: one quant type per model."""

    name: ClassVar[str] = "bnb-nf4"
    storage: ClassVar[str] = "bnb-nf4"
    bits: ClassVar[int] = 4
    precision: ClassVar[str] = "int4"

    blocksize: int = 64
    double_quant: bool = True
    compute_dtype: str = "bfloat16"


BF16 = "bf16"  # the candidate setting "kept unquantized"


@dataclass(frozen=True)
class GptqMixed(_GptqSolverFields):
    """Measured-sensitivity mixed precision (pixtral_quant/mixed): every decoder Linear and the lm_head is solved
    by GPTQ at each candidate setting from one Hessian, then a knapsack picks one setting per Linear that
    minimises the summed GPTQ loss under the budget; written as one compressed-tensors checkpoint.
    candidates: "int<bits>-g<group>" (group -1: per channel), and "bf16" to allow keeping a Linear unquantized
    (by default the largest allocation is all INT8; bf16 is the reference every loss is measured from); max_size: checkpoint bytes on disk
    ("6.5GB", "4GiB"); fit: the GPU memory `plan` must fit (its exact byte model) with `context` tokens and
    `images` images (None: plan's workload defaults); one of max_size / fit is required. fisher_samples:
    calibration samples whose backward pass gives the output-channel Fisher the losses are weighted by
    (mixed/fisher.py). allocation: module →
    setting: convert writes the one it chose into the manifest's recipe; a recipe giving it is used as is."""

    name: ClassVar[str] = "gptq-mixed"
    optional_targets: ClassVar[dict] = {"lm_head": "auto"}
    target_notes: ClassVar[dict] = {"lm_head": "GPTQ at every candidate after the last layer; the allocation picks"}
    decoder_reason: ClassVar[str] = "decoder Linear: GPTQ at every candidate, the allocation picks"
    allocates: ClassVar[bool] = True
    calibrated: ClassVar[bool] = True

    candidates: tuple = ("int4-g128", "int4-g64", "int4-g32", "int8-g128")
    max_size: str | None = None
    fit: str | None = None
    context: int | None = None
    images: int | None = None
    fisher_samples: int = 8
    allocation: dict | None = None

    def __post_init__(self):
        object.__setattr__(self, "candidates", tuple(self.candidates))  # YAML gives a list


def parse_setting(label: str) -> tuple[int, int] | None:
    """'int4-g128' → (4, 128), 'int8-g-1' → (8, -1), 'bf16' → None; ValueError for anything else."""
    if label == BF16:
        return None
    bits, sep, group = label.removeprefix("int").partition("-g")
    if not (label.startswith("int") and sep and bits.isdigit() and group.lstrip("-").isdigit()):
        raise ValueError(f"not a setting: {label!r}")
    return int(bits), int(group)


def setting_label(bits: int, group_size: int) -> str:
    return f"int{bits}-g{group_size}"


SCHEME_CONFIGS: dict[str, type] = {c.name: c for c in (GptqInt4, GptqInt8, RtnInt4, RtnInt8, BnbInt8, BnbNf4,
                                                        GptqMixed)}


@dataclass(frozen=True)
class Gguf(_SchemeFacts):
    """llama.cpp GGUF files (export/gguf) instead of a checkpoint: the text model quantized by llama.cpp's own
    quantizer to `type` (a key of export/gguf/ftypes.FILE_TYPES: q4_k_m, q6_k, q8_0, f16 ...), the vision tower +
    projector as an mmproj in `mmproj_type` (f16 or q8_0, llama.cpp's converter's choices), and, with `imatrix`,
    an importance matrix from the calibration set through the full multimodal model (images in unless
    calibration.text_only) passed to the quantizer and saved as imatrix.gguf. One config for the whole family:
    its scheme name is `gguf-<type>`."""

    type: str = "q4_k_m"
    mmproj_type: str = "f16"
    imatrix: bool = True

    @property
    def name(self) -> str:
        return f"{GGUF_PREFIX}{self.type}"


GGUF_PREFIX = "gguf-"
# When stderr is not a terminal (CI logs, nohup), progress is plain lines: one when a step (a decoder layer, the
# vision pass, a candidate's eval run) ends, and one at most every PROGRESS_EVERY_S seconds inside it, with its ETA.
PROGRESS_EVERY_S = 30.0
# `bench`: timed runs of prefill and of the whole generation per checkpoint; the medians are reported.
BENCH_REPEATS = 3
# Largest safetensors shard, in GB = 1e9 bytes as Hugging Face's max_shard_size "5GB": convert (Recipe.max_shard_gb)
# and synth (--shard-gb, loading/write.py's default) both start a new shard before it.
MAX_SHARD_GB = 5.0
# Scheme families whose name carries a value: name prefix → (config class, the field the rest of the name sets).
SCHEME_FAMILIES: dict[str, tuple[type, str]] = {GGUF_PREFIX: (Gguf, "type")}


@dataclass(frozen=True)
class Targets:
    """Which Linears are quantized. decoder: every Linear of the text decoder. lm_head / vision_tower /
    projector: None (kept bf16) or a precision ('int8', 'int4'; 'auto' for gptq-mixed: the allocation picks its
    setting) where the scheme supports it (plan.py)."""

    decoder: bool = True
    lm_head: str | None = None
    vision_tower: str | None = None
    projector: str | None = None


@dataclass(frozen=True)
class CalibConfig:
    """Calibration data (GPTQ schemes only). set: a built-in set, manifest, folder or hf:PATH
    (calibration.dataset.load_set); text_only: drop every image (for the images-vs-text comparison);
    activation_budget_gib: decoder activations kept in CPU memory before they spill to disk."""

    set: str = "calib"
    num_samples: int | None = 128
    seed: int = 0
    max_tokens: int | None = 4096
    text_only: bool = False
    activation_budget_gib: float = 8.0


@dataclass(frozen=True)
class Thresholds:
    """Validation bars (validate fails, exit 1, when one is broken; None = not checked). Metrics are measured
    against the reference on held-out image prompts (pixtral_quant.validate):
    max_mean_kl / max_p95_kl: per-sample mean token KL(ref‖cand) on the answer tokens, mean and 95th percentile
    over samples; min_top1_agreement: share of answer positions where both argmaxes agree; max_ppl_ratio:
    perplexity of the answers, candidate / reference; min_exact_match: share of samples whose greedy outputs
    are identical; min_recovery: candidate task accuracy / reference task accuracy (sets with answers);
    max_size_gb: checkpoint weights on disk (GB = 1e9 bytes), also checked by convert."""

    max_mean_kl: float | None = None
    max_p95_kl: float | None = None
    min_top1_agreement: float | None = None
    max_ppl_ratio: float | None = None
    min_exact_match: float | None = None
    min_recovery: float | None = None
    max_size_gb: float | None = None


# Thresholds validate applies when neither --thresholds/--recipe nor the candidate's manifest gives any, by the
# candidate's weight bits (16: not quantized). Set from the bundled model's measured spread (reports/): INT8
# schemes land at KL ≈ 1e-6..1e-4, INT4 at 2e-4..8e-3, a broken layer at > 0.1.
DEFAULT_THRESHOLDS: dict[int, Thresholds] = {
    16: Thresholds(max_mean_kl=1e-3, min_top1_agreement=0.99, min_recovery=0.99),
    8: Thresholds(max_mean_kl=0.01, max_p95_kl=0.05, min_top1_agreement=0.98, max_ppl_ratio=1.02,
                  min_recovery=0.99),
    4: Thresholds(max_mean_kl=0.05, max_p95_kl=0.25, min_top1_agreement=0.95, max_ppl_ratio=1.1, min_recovery=0.97),
}


@dataclass(frozen=True)
class Tolerances:
    """How much worse than a --baseline report a candidate may get before validate fails. kl_rel / kl_abs: a
    KL may grow to baseline × (1 + kl_rel) + kl_abs; rate_abs: an agreement / exact-match / recovery / accuracy
    may drop by this much (absolute); ppl_ratio_abs: the perplexity ratio may grow by this much."""

    kl_rel: float = 0.10
    kl_abs: float = 1e-6
    rate_abs: float = 0.01
    ppl_ratio_abs: float = 0.005


@dataclass(frozen=True)
class EngineConfig:
    """name: a key of validate.engines.ENGINES. The rest is vLLM's: tensor_parallel_size, pipeline_parallel_size and
    distributed_executor_backend ('mp', 'ray', ... or None: vLLM's choice) are passed to vllm.LLM unchanged;
    logprobs_k: prompt log-probabilities kept per answer position (vLLM's max_logprobs is raised to it)."""

    name: str = "transformers"
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    distributed_executor_backend: str | None = None
    logprobs_k: int = 20


@dataclass(frozen=True)
class VllmConfig:
    """Start-up settings of the vLLM runs (pixtral_quant.engines.vllm passes them to vllm.LLM; a caller's
    engine_args override them). cpu_kvcache_gib: VLLM_CPU_KVCACHE_SPACE of vLLM's CPU build, enough for 64
    short image prompts of the tiny model."""

    max_model_len: int = 8192
    max_num_seqs: int = 64
    enforce_eager: bool = True
    cpu_kvcache_gib: int = 1


@dataclass(frozen=True)
class ValidateConfig:
    """How validate runs. eval_set: a set spec as calibration.dataset.load_set takes (None: the reference's
    built-in held-out set); num_samples/seed: a deterministic subset (None = all); batch_size: teacher-forced
    batch; max_new_tokens: cap of the greedy generation; layer_sqnr_samples: samples whose per-decoder-layer
    outputs are compared (0 = skip per-layer SQNR)."""

    eval_set: str | None = None
    num_samples: int | None = None
    seed: int = 0
    batch_size: int = 8
    max_new_tokens: int = 32
    layer_sqnr_samples: int = 0
    tolerances: Tolerances = field(default_factory=Tolerances)


@dataclass(frozen=True)
class Recipe:
    """Everything a conversion needs besides the model path and the output directory."""

    scheme: Any = field(default_factory=GptqInt4)
    name: str = "custom"
    description: str = ""
    targets: Targets = field(default_factory=Targets)
    calibration: CalibConfig = field(default_factory=CalibConfig)
    thresholds: Thresholds = field(default_factory=Thresholds)
    max_shard_gb: float = MAX_SHARD_GB

    @property
    def max_shard_bytes(self) -> int:
        """max_shard_gb in bytes (GB = 1e9 bytes, as Thresholds.max_size_gb): where convert starts a new shard."""
        return int(self.max_shard_gb * 1e9)

    def to_dict(self) -> dict:
        """Plain JSON-able dict; the scheme is {'name': ..., fields...}."""
        out = dataclasses.asdict(self)
        out["scheme"] = {"name": self.scheme.name, **dataclasses.asdict(self.scheme)}
        return out


SECTIONS = {"targets": Targets, "calibration": CalibConfig, "thresholds": Thresholds}


def build(cls: type, raw: dict | None, where: str):
    """cls(**raw), UsageError on an unknown key or a value of the wrong type (where = the recipe section)."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise UsageError(f"expected a mapping, got {type(raw).__name__}", where=where,
                         fix=f"write it as keys: {', '.join(f.name for f in fields(cls))}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise UsageError(f"unknown key(s) {unknown}", where=where, fix=f"use only {sorted(known)}")
    for key, value in raw.items():
        _check_type(cls, known[key], value, f"{where}.{key}")
    return cls(**raw)


def _gguf_types() -> tuple[str, ...]:
    from .export.gguf.ftypes import FILE_TYPES  # a plain table: no gguf / llama.cpp import

    return tuple(FILE_TYPES)


def _gguf_mmproj_types() -> tuple[str, ...]:
    from .export.gguf.ftypes import MMPROJ_TYPES

    return MMPROJ_TYPES


# Types of the optional fields (default None), by annotation: their default cannot say what they take.
OPTIONAL_KINDS = {"float | None": float, "int | None": int, "str | None": str, "dict | None": dict}
# Values a field accepts beyond its type (field name → (test, what to write)); the libraries would fail later.
LIMITS = {
    "damp_percent": (lambda v: 0 < v < 1, "a fraction of the mean Hessian diagonal in (0, 1), e.g. 0.01"),
    "group_size": (lambda v: v == -1 or v > 0, "a positive group size such as 128, or -1 (per output channel)"),
    "num_samples": (lambda v: v > 0, "at least 1"),
    "max_tokens": (lambda v: v > 0, "at least 1"),
    "type": (lambda v: v in _gguf_types(), "a llama.cpp file type: " + ", ".join(_gguf_types())),
    "mmproj_type": (lambda v: v in _gguf_mmproj_types(), "one of " + ", ".join(_gguf_mmproj_types())),
    "candidates": (lambda v: len(v) > 0 and all(_is_candidate(c) for c in v),
                   "settings such as int4-g128, int4-g64, int4-g32, int8-g128 (bits 4 or 8) and bf16"),
    "max_size": (lambda v: _is_size(v), "a size such as 6.5GB or 4GiB"),
    "fit": (lambda v: _is_size(v), "a GPU memory size such as 8GiB or 24GiB"),
    "context": (lambda v: v > 0, "at least 1 token"),
    "fisher_samples": (lambda v: v > 0, "at least 1 sample"),
    "images": (lambda v: v >= 0, "0 or more images"),
}


def _is_candidate(label) -> bool:
    try:
        setting = parse_setting(label) if isinstance(label, str) else ()
    except ValueError:
        return False
    return setting is None or setting[0] in (4, 8) and (setting[1] == -1 or setting[1] > 0)


def _is_size(text: str) -> bool:
    """True for a positive size; a bare number raises parse_size's NoUnit (its fix names both units), which
    _check_type gives the field's name."""
    from .memory.units import NoUnit, parse_size

    try:
        return parse_size(text) > 0
    except NoUnit:
        raise
    except UsageError:
        return False


def _check_type(cls: type, f: dataclasses.Field, value, where: str) -> None:
    default = f.default if f.default is not dataclasses.MISSING else None
    kinds = {bool: (bool,), int: (int,), float: (int, float), str: (str,), tuple: (tuple, list)}
    if value is None:
        if default is not None:
            raise UsageError("must not be null", where=where, fix=f"give a value like {default!r}")
        return
    kind = type(default) if default is not None else OPTIONAL_KINDS.get(str(f.type))
    if kind is None:
        return
    wanted = kinds.get(kind, (kind,))
    if isinstance(value, bool) and bool not in wanted or not isinstance(value, wanted):
        article = "an" if kind.__name__[0] in "aeiou" else "a"
        raise UsageError(f"{value!r} is not {article} {kind.__name__}", where=where,
                         fix=f"e.g. {default!r} (the default)" if default is not None else f"write {article} {kind.__name__}")
    test, what = LIMITS.get(f.name, (None, None))
    try:
        ok = test is None or test(value)
    except UsageError as exc:  # the test's own, more precise message (a size without a unit)
        raise UsageError(exc.message, where=where, fix=exc.fix) from None
    if not ok:
        raise UsageError(f"{value!r} is out of range", where=where, fix=f"use {what}")


def scheme_choices() -> str:
    """The scheme names for messages and --help: the fixed ones, then each family's pattern."""
    return ", ".join(sorted(SCHEME_CONFIGS)) + ", " + ", ".join(f"{p}<{f}>" for p, (_, f) in SCHEME_FAMILIES.items())


def scheme_from_dict(raw, where: str = "scheme"):
    """'gptq-int4' or {'name': 'gptq-int4', 'group_size': 64, ...} → the scheme's config; 'gguf-q4_k_m' →
    Gguf(type='q4_k_m') (SCHEME_FAMILIES)."""
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict) or "name" not in raw:
        raise UsageError("the scheme needs a name", where=where, fix=f"use one of {scheme_choices()}")
    name, rest = raw["name"], {k: v for k, v in raw.items() if k != "name"}
    if name in SCHEME_CONFIGS:
        return build(SCHEME_CONFIGS[name], rest, where)
    prefix = next((p for p in SCHEME_FAMILIES if isinstance(name, str) and name.startswith(p)), None)
    if prefix is None:
        raise UsageError(f"unknown scheme {name!r}", where=where,
                         fix=f"{did_you_mean(name, SCHEME_CONFIGS)}use one of {scheme_choices()}")
    cls, key = SCHEME_FAMILIES[prefix]
    value = name[len(prefix):]
    test, what = LIMITS[key]
    if not test(value):
        raise UsageError(f"unknown scheme {name!r}: llama.cpp has no type {value!r}", where=where, fix=f"use {what}")
    if rest.setdefault(key, value) != value:
        raise UsageError(f"{key} {rest[key]!r} contradicts the scheme name {name!r}", where=f"{where}.{key}",
                         fix=f"drop {key}, or name the scheme {prefix}{rest[key]}")
    return build(cls, rest, where)


def recipe_from_dict(raw: dict, where: str = "recipe") -> Recipe:
    """A recipe mapping (parsed YAML or a manifest's `recipe`) → Recipe; unknown keys anywhere are errors."""
    if not isinstance(raw, dict):
        raise UsageError("a recipe is a mapping of keys", where=where, fix="see recipes/*.yaml for the shape")
    top = {f.name for f in fields(Recipe)}
    unknown = sorted(set(raw) - top)
    if unknown:
        raise UsageError(f"unknown key(s) {unknown}", where=where, fix=f"use only {sorted(top)}")
    kwargs = {k: v for k, v in raw.items() if k not in SECTIONS and k != "scheme"}
    for key, value in kwargs.items():
        _check_type(Recipe, next(f for f in fields(Recipe) if f.name == key), value, f"{where}.{key}")
    sections = {k: build(cls, raw.get(k), f"{where}.{k}") for k, cls in SECTIONS.items()}
    scheme = scheme_from_dict(raw.get("scheme", GptqInt4.name), f"{where}.scheme")
    return Recipe(scheme=scheme, **sections, **kwargs)


def with_overrides(recipe: Recipe, overrides: dict[str, Any], where: str = "command line",
                   clear: bool = False) -> Recipe:
    """Recipe with dotted-key overrides applied, e.g. {'calibration.num_samples': 8, 'scheme.group_size': 64,
    'scheme': 'rtn-int4'}. A new scheme name resets the scheme's options to its defaults first. A None value is
    skipped, or with clear=True sets the field to None."""
    raw = recipe.to_dict()
    if "scheme" in overrides:
        raw["scheme"] = {"name": overrides["scheme"]}
    for key, value in overrides.items():
        if key == "scheme" or value is None and not clear:
            continue
        section, _, leaf = key.partition(".")
        if not leaf or section not in raw or not isinstance(raw[section], dict):
            raise UsageError(f"cannot override {key!r}", where=where, fix="use section.key, e.g. calibration.seed")
        raw[section][leaf] = value
    return recipe_from_dict(raw, where)
