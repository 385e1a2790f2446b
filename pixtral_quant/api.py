"""The Python API: the three jobs of the CLI with plain arguments (names, paths, numbers), returning result objects.
The CLI (pixtral_quant/cli/) is a thin layer over these functions.

    from pixtral_quant import api as pq     # not `pixtral_quant.convert`: that is the module underneath

    result = pq.convert("tiny", scheme="rtn-int8", out="out-rtn")              # or recipe="tiny-gptq-int4"
    print(result.out, result.bytes_after)
    report = pq.validate(["out-rtn"], reference="tiny", num_samples=8)
    print(report.passed, report.failures)
    print(pq.plan("pixtral-12b-int4", gpu_memory="8GiB").fits)

Errors are pixtral_quant.errors exceptions (UsageError, InputError, CheckFailed ...) with `where` and `fix`; a
validate or plan whose answer is "no" returns passed/fits False instead of raising.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

# convert's keyword options → the recipe field each sets (None value: not given, the recipe's own stays)
CONVERT_OPTIONS = {"calibration": "calibration.set", "num_samples": "calibration.num_samples",
                   "seed": "calibration.seed", "group_size": "scheme.group_size", "act_order": "scheme.desc_act",
                   "damp": "scheme.damp_percent", "text_only": "calibration.text_only",
                   "mmproj_type": "scheme.mmproj_type"}
# --imatrix → the recipe fields it sets (GGUF schemes): the importance matrix on or off, images kept or stripped.
IMATRIX_CHOICES = {"images": {"scheme.imatrix": True, "calibration.text_only": False},
                   "text": {"scheme.imatrix": True, "calibration.text_only": True},
                   "none": {"scheme.imatrix": False}}


@dataclass(frozen=True)
class ValidateResult:
    """passed: every candidate met its thresholds (and the baseline); failures: each failed check in words;
    report: the whole report (report.json's content: validate/report.py)."""

    passed: bool
    failures: list[str]
    report: dict


@dataclass(frozen=True)
class PlanResult:
    """fits: the plan's peak is within the card; runtime: 'transformers' or 'llama.cpp'; report: plan --json's
    document (memory/report.py, memory/llamacpp.py)."""

    fits: bool
    runtime: str
    report: dict


def build_recipe(model: str | Path = "tiny", recipe: str | Path | None = None, scheme=None, *,
                 imatrix: str | None = None, max_size: str | None = None, fit: str | None = None,
                 context: int | None = None, images: int | None = None, **options):
    """The Recipe a conversion runs: a recipe (file, shipped name) or a scheme (name or config) with its
    defaults, then the options (CONVERT_OPTIONS, plus imatrix / max_size / fit / context / images, which only
    their scheme family takes). Neither given: the default recipe (recipes.DEFAULT_RECIPE)."""
    from .config import Gguf, GptqMixed, scheme_from_dict, with_overrides
    from .recipes import DEFAULT_RECIPE, load_recipe, scheme_recipe

    unknown = sorted(set(options) - set(CONVERT_OPTIONS))
    if unknown:
        raise UsageError(f"unknown option(s) {unknown}", where="convert", fix=f"use {sorted(CONVERT_OPTIONS)}")
    if recipe is not None and scheme is not None:
        raise UsageError("--recipe and --scheme both given", fix="pick one: a recipe, or a scheme with defaults")
    if isinstance(scheme, str):
        scheme = scheme_from_dict(scheme, where="--scheme")
    base = scheme_recipe(scheme, model) if scheme is not None else load_recipe(recipe or DEFAULT_RECIPE)
    family = {"imatrix": Gguf, "mmproj_type": Gguf, "max_size": GptqMixed, "fit": GptqMixed,
              "context": GptqMixed, "images": GptqMixed}
    given = {"imatrix": imatrix, "mmproj_type": options.get("mmproj_type"), "max_size": max_size, "fit": fit,
             "context": context, "images": images}
    _check_family(base.scheme, [k for k, v in given.items() if v is not None and not isinstance(base.scheme,
                                                                                                 family[k])], family)
    if imatrix is not None and imatrix not in IMATRIX_CHOICES:
        raise UsageError(f"unknown imatrix choice {imatrix!r}", where="--imatrix", fix=f"use {list(IMATRIX_CHOICES)}")
    overrides = {CONVERT_OPTIONS[k]: v for k, v in options.items() if v is not None}
    final = with_overrides(base, {**overrides, **(IMATRIX_CHOICES[imatrix] if imatrix else {})})
    if max_size is not None or fit is not None:  # a budget given here replaces the recipe's
        final = with_overrides(final, {"scheme.max_size": max_size, "scheme.fit": fit}, clear=True)
    if context is not None or images is not None:
        final = with_overrides(final, {"scheme.context": context, "scheme.images": images})
    return final


def _check_family(scheme, misplaced: list[str], family: dict) -> None:
    """Options of one scheme family given for another: one error naming them and a scheme that takes them."""
    from .config import Gguf, GptqMixed

    if not misplaced:
        return
    flags = [f"--{k.replace('_', '-')}" for k in misplaced]
    names = {Gguf: ("gguf-<type>", f"gguf-{Gguf().type}"), GptqMixed: (GptqMixed.name, GptqMixed.name)}
    kind, example = names[family[misplaced[0]]]
    raise UsageError(f"{', '.join(flags)} apply only to {kind} schemes", where=flags[0],
                     fix=f"drop {', '.join(flags)}, or pick a scheme such as --scheme {example}")


def convert(model: str | Path = "tiny", recipe: str | Path | None = None, scheme=None, *, out: str | Path = "out",
            overwrite: bool = False, resume: bool = False, reporter=None, **options):
    """Quantize `model` (directory, hub id or shipped name) with a recipe or a scheme into `out`; options as
    build_recipe's (num_samples=, calibration=, group_size=, max_size=, fit= ...). Returns
    pipeline.runtime.ConvertResult (out, plan, bytes_before/after, seconds, calibration stats)."""
    final = build_recipe(model, recipe, scheme, **options)  # option errors before torch is imported (< 2 s)
    from .convert import convert as run_convert

    return run_convert(model, final, out, overwrite=overwrite, resume=resume, reporter=reporter)


def validate(candidates, reference: str | Path = "tiny", *, eval: str | None = None, num_samples: int | None = None,
             seed: int | None = None, thresholds: str | Path | None = None, recipe: str | Path | None = None,
             baseline: str | Path | None = None, report_dir: str | Path | None = None, reporter=None,
             engine: str | None = None, update_card: bool = False, **engine_options) -> ValidateResult:
    """Check each candidate folder against `reference` on held-out image prompts. thresholds: a YAML file, or
    recipe: a recipe's thresholds (else the manifest's, else built-in); engine: transformers (default), vllm or
    llama.cpp, engine_options its EngineConfig fields (tensor_parallel_size=, logprobs_k= ...); the remaining
    ValidateConfig fields (layer_sqnr_samples=, max_new_tokens=, batch_size=) go in engine_options too.
    update_card: write the result into each candidate's model card (README.md, export/card.py)."""
    from .config import ValidateConfig
    from .recipes import load_recipe
    from .validate.checks import read_thresholds_file
    from .validate.engines import EngineConfig
    from .validate.pipeline import validate as run_validate
    from .validate.report import terminal_summary

    if thresholds and recipe:
        raise UsageError("--thresholds and --recipe both given", fix="pick one source of thresholds")
    explicit = ((read_thresholds_file(thresholds), f"--thresholds {thresholds}") if thresholds else
                (load_recipe(recipe).thresholds, f"--recipe {recipe}") if recipe else None)
    candidates = [candidates] if isinstance(candidates, (str, Path)) else list(candidates)
    cfg_fields = {f.name for f in dataclasses.fields(ValidateConfig)}
    given = {"eval_set": eval, "num_samples": num_samples, "seed": seed,
             **{k: v for k, v in engine_options.items() if k in cfg_fields}}
    cfg = dataclasses.replace(ValidateConfig(), **{k: v for k, v in given.items() if v is not None})
    rest = {"name": engine, **{k: v for k, v in engine_options.items() if k not in cfg_fields}}
    engine_cfg = dataclasses.replace(EngineConfig(), **{k: v for k, v in rest.items() if v is not None})
    report = run_validate(reference, candidates, cfg, thresholds=explicit, baseline=baseline,
                          report_dir=report_dir, reporter=reporter, engine=engine_cfg)
    if update_card:
        _update_cards(report)
    return ValidateResult(bool(report["passed"]), terminal_summary(report)[1], report)


def _update_cards(report: dict) -> None:
    """Each candidate's README.md rewritten with its validation rows (the manifest it was converted with)."""
    from .export.card import validation_rows, write_card
    from .export.manifest import MANIFEST, read_manifest

    for cand in report["candidates"]:
        path = Path(cand["path"])
        if not (path / MANIFEST).is_file():
            raise UsageError("--update-card needs the manifest.json convert wrote", where=path,
                             fix="validate a folder `pixtral-quant convert` wrote, or drop --update-card")
        write_card(path, read_manifest(path), validation_rows(report, cand["label"]))


def plan(recipe: str | Path, model: str | Path | None = None, *, gpu_memory: str | None = None,
         reserve: str | None = None, runtime: str | None = None, workload: dict | None = None,
         placement: dict | None = None) -> PlanResult:
    """Will `recipe`'s output run on a card? gpu_memory / reserve: sizes with units ('8GiB'); workload: context,
    images, image_width/height, text_tokens, new_tokens; placement: embeddings, vision, lm_head (transformers
    only). runtime: transformers (checkpoint recipes' default) or llama.cpp (GGUF recipes' default)."""
    from .config import Gguf
    from .recipes import load_recipe

    loaded = load_recipe(recipe)
    is_gguf = isinstance(loaded.scheme, Gguf)
    runtime = runtime or ("llama.cpp" if is_gguf else "transformers")
    if runtime == "llama.cpp":
        from .memory.llamacpp import llamacpp_report

        if any(v is not None for v in (placement or {}).values()):
            raise UsageError("--embeddings, --vision and --lm-head-on place transformers' modules; llama.cpp "
                             "places the GGUF itself", where="--runtime llama.cpp", fix="drop those options")
        report = llamacpp_report(model, loaded, gpu_memory=gpu_memory, reserve=reserve, workload=workload)
        return PlanResult(bool(report["fits"]), runtime, report)
    if is_gguf:
        raise UsageError(f"{loaded.scheme.name} writes GGUF files, which llama.cpp runs", where="--runtime",
                         fix="use --runtime llama.cpp (the default for gguf-<type> recipes)")
    from .memory import memory_report

    report = memory_report(model, loaded, gpu_memory=gpu_memory, reserve=reserve, workload=workload,
                           placement=placement)
    return PlanResult(bool(report["fits"]), runtime, report)
