"""`validate`: reference vs candidate(s) on held-out image prompts → a report dict (+ files when asked).

    from pixtral_quant.validate.pipeline import validate
    report = validate("tiny", ["out-gptq8"], report_dir="reports/validate-tiny")
    report["passed"]  # False → the CLI exits 1

Order (bad input fails before any model runs): reference → candidates (half-written? same architecture?)
→ thresholds and baseline files → eval set → overlap with each candidate's calibration data → the engine
(vLLM installed?) → reference run (cached by content on disk) → each candidate in turn, one model in memory at
a time → checks → report. Which engine runs the models: engines.py (transformers by default, or vLLM).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..config import ValidateConfig
from ..pipeline.runtime import Reporter, compute_setup
from ..export.manifest import versions
from ..loading.arch import parameter_counts
from . import cache, checks, compare, engines, evalset, models
from .outputs import run_model, token_ids


def validate(reference: str | Path, candidates: list[str | Path], cfg: ValidateConfig | None = None, *,
             thresholds=None, baseline: str | Path | None = None, report_dir: str | Path | None = None,
             reporter: Reporter | None = None, engine: engines.EngineConfig | None = None) -> dict:
    """Validate each candidate against `reference`. thresholds: (Thresholds, source) from --thresholds/--recipe
    or None (manifest, then defaults); engine: which engine runs the models (default transformers). Returns the
    report dict; writes report.json/.md + PNGs to report_dir."""
    from ..calibration.dataset import open_tokenizer
    from ..loading import open_checkpoint

    from .report import check_report_dir, write_report

    cfg, reporter = cfg or ValidateConfig(), reporter or Reporter()
    runner = engines.engine_for(engine or engines.EngineConfig())
    if report_dir is not None:
        check_report_dir(Path(report_dir))
    ckpt = open_checkpoint(reference)
    cands = [models.open_candidate(p, label) for p, label in zip(candidates, unique_labels(candidates))]
    for c in cands:
        models.check_same_architecture(ckpt.config, c)
    limits = {c.label: checks.pick_thresholds(thresholds, c.manifest, c.bits) for c in cands}
    base = checks.read_baseline(baseline) if baseline else None
    priors = {c.label: checks.baseline_entry(base, c.label, len(cands) == 1, str(baseline)) for c in cands} \
        if base is not None else {}
    tok = open_tokenizer(ckpt.tokenizer)
    spec = evalset.eval_spec(ckpt.path, cfg.eval_set)
    eset = evalset.load_eval(spec, tok, cfg.num_samples, cfg.seed)
    if base is not None and base["eval"]["content_hash"] != eset.content_hash:
        raise _baseline_mismatch(baseline, base, eset)
    loaded: dict = {}  # candidates calibrated on the same data share one load of it
    overlap = {c.label: evalset.check_overlap(c, eset, tok, loaded) for c in cands}
    runner.check(cfg)
    engines.check_candidates(runner, cands)
    # Every input is checked: from here on only models run.
    device, dtype = compute_setup()
    run = Run(eset, tok, token_ids(tok), cfg, device, dtype, reporter)
    ref_out, cached = reference_outputs(ckpt, run, runner)
    labels = [{"id": s.id, "task": s.task, "answer": s.answer, "bucket": compare.size_bucket(list(f.sizes))}
              for s, f in zip(eset.samples, eset.fits)]
    entries = [check_candidate(c, run, runner, ref_out, labels, limits[c.label], priors.get(c.label),
                               overlap[c.label]) for c in cands]
    report = {**assemble(ckpt, spec, eset, cfg, cached, entries, baseline), "engine": engines.describe(runner)}
    if report_dir is not None:
        write_report(report, Path(report_dir))
    return report


def check_candidate(c, run: "Run", runner, ref_out, labels: list[dict], picked, prior: dict | None,
                    overlap: str) -> dict:
    """Run candidate `c` on `runner` (an engine), compare it with the reference's outputs, check thresholds
    (and the baseline entry). labels: per eval sample {'id', 'task', 'answer', 'bucket'}."""
    out = runner.candidate(c, run)
    entry = candidate_entry(c, run, compare.rows_for(ref_out, out, labels, run.decode),
                            compare.layer_sqnr(ref_out, out), picked)
    if prior is not None:
        entry["baseline"] = {"label": prior["label"], "checks": checks.check_baseline(
            entry["metrics"]["overall"], prior["metrics"]["overall"], run.cfg.tolerances)}
    entry["calibration_overlap"], entry["passed"] = overlap, passed(entry)
    return entry


def unique_labels(paths: list) -> list[str]:
    """Folder names, suffixed #2, #3 ... when two candidates share one."""
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        name = Path(p).name or str(p)
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


@dataclass
class Run:
    """What every model run of one validation shares."""

    eset: object
    tok: object
    ids: dict
    cfg: ValidateConfig
    device: torch.device
    dtype: torch.dtype
    reporter: Reporter

    def decode(self, ids: list[int]) -> str:
        return self.tok.instruct_tokenizer.tokenizer.decode(ids)

    def outputs(self, model, label: str):
        out = run_model(model, lambda i: self.eset.encoded(self.tok, i), len(self.eset), self.ids, self.cfg,
                        self.reporter.task(label, len(self.eset)))
        self.reporter.done()
        return out


def reference_outputs(ckpt, run: Run, runner):
    """(outputs, came_from_cache): the reference run on `runner` (an engine), from the content-keyed cache when
    it is there."""
    options = {"max_new_tokens": run.cfg.max_new_tokens, "device": run.device.type, "dtype": str(run.dtype),
               **runner.cache_options()}
    files = [*ckpt.weight_files, *config_files(ckpt.path)]
    key = cache.reference_key(cache.model_hash(files), run.eset.content_hash, options)
    root = cache.cache_root()
    hit = cache.load(root, key, run.cfg.layer_sqnr_samples)
    if hit is not None and len(hit.samples) == len(run.eset):
        run.reporter.log(f"reference: cached run {key} ({root})")
        return hit, True
    out = runner.reference(ckpt, run)
    cache.store(root, key, out)
    return out, False


def config_files(path: Path) -> list[Path]:
    return [p for p in (path / "config.json", path / "params.json") if p.is_file()]


def candidate_entry(c, run: Run, rows: list[dict], layer_sqnr: list[float], picked) -> dict:
    """One candidate's section of the report: metrics overall / per task / per size, threshold checks.
    picked: (Thresholds, where they came from)."""
    overall = {**compare.aggregate(rows), "size_gb": c.weight_bytes / 1e9}
    limits, source = picked
    return {"label": c.label, "path": str(c.path), "bits": c.bits, "quantization": c.quantization,
            "weight_bytes": c.weight_bytes, "thresholds": {"source": source, **asdict(limits)},
            "metrics": {"overall": overall, "by_task": compare.grouped(rows, "task"),
                        "by_size": compare.grouped(rows, "bucket")},
            "layer_sqnr_db": layer_sqnr, "samples": rows, "checks": checks.check_thresholds(overall, limits)}


def passed(entry: dict) -> bool:
    """Every threshold that could be measured holds, and nothing regressed past the baseline."""
    records = entry["checks"] + entry.get("baseline", {}).get("checks", [])
    return all(r["passed"] is not False for r in records)


def assemble(ckpt, spec, eset, cfg, cached, entries, baseline) -> dict:
    counts = parameter_counts(ckpt.config)
    return {
        "schema": checks.REPORT_SCHEMA, "tool": "pixtral-quant validate", "versions": versions(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "reference": {"path": str(ckpt.path), "source": ckpt.source, "format": ckpt.format,
                      "weight_bytes": sum(f.stat().st_size for f in ckpt.weight_files), "cached": cached,
                      "parameters": counts.get("total")},
        "eval": {"set": shown(spec), "content_hash": eset.content_hash, "samples": len(eset), "seed": cfg.seed,
                 "num_samples": cfg.num_samples},
        "options": {k: v for k, v in asdict(cfg).items() if k != "tolerances"},
        "tolerances": asdict(cfg.tolerances), "baseline": str(baseline) if baseline else None,
        "candidates": entries, "passed": all(e["passed"] for e in entries),
    }


def shown(spec: str) -> str:
    """A set spec as reports show it: relative to the working directory when it is a path below it."""
    path = Path(spec)
    try:
        return str(path.resolve().relative_to(Path.cwd())) if path.exists() else spec
    except ValueError:
        return spec


def _baseline_mismatch(path, base, eset):
    from ..errors import InputError

    return InputError(f"the baseline was measured on another eval set ({base['eval']['set']}, "
                      f"{base['eval']['content_hash'][:19]}…) than this run ({eset.content_hash[:19]}…)",
                      where=path, fix="validate with the same --eval, --num-samples and --seed as the baseline")
