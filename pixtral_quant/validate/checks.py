"""Thresholds (which apply, and whether each holds) and the --baseline regression check. Pure: aggregates and
dataclasses in, check records out."""

from __future__ import annotations

import dataclasses
import json
import operator
from pathlib import Path

from ..config import DEFAULT_THRESHOLDS, Thresholds, Tolerances, build
from ..errors import InputError, UsageError

# Threshold field → (aggregate metric it bounds, comparison that must hold). One-to-one with Thresholds.
CHECKS = {
    "max_mean_kl": ("mean_kl", "<="), "max_p95_kl": ("p95_kl", "<="), "min_top1_agreement": ("top1_agreement", ">="),
    "max_ppl_ratio": ("ppl_ratio", "<="), "min_exact_match": ("exact_match", ">="), "min_recovery": ("recovery", ">="),
    "max_size_gb": ("size_gb", "<="),
}
OPS = {"<=": operator.le, ">=": operator.ge}
assert set(CHECKS) == {f.name for f in dataclasses.fields(Thresholds)}, "CHECKS must cover every threshold"
assert len({m for m, _ in CHECKS.values()}) == len(CHECKS), "one metric per threshold"

# Metric → how a --baseline comparison tolerates it getting worse (see config.Tolerances).
BASELINE = {"mean_kl": "kl", "p95_kl": "kl", "top1_agreement": "rate", "exact_match": "rate", "recovery": "rate",
            "accuracy_cand": "rate", "ppl_ratio": "ppl"}
REPORT_SCHEMA = 1


def read_thresholds_file(path: str | Path) -> Thresholds:
    """A YAML file holding threshold keys, top level or under `thresholds:`; unknown keys are errors."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError("no such thresholds file", where=path, fix="pass an existing YAML file (or use --recipe)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"not valid YAML ({exc})", where=path, fix="fix the YAML syntax") from None
    if isinstance(raw, dict) and set(raw) == {"thresholds"}:
        raw = raw["thresholds"]
    return build(Thresholds, raw, str(path))


def any_set(t: Thresholds) -> bool:
    return any(v is not None for v in dataclasses.asdict(t).values())


def pick_thresholds(explicit: tuple[Thresholds, str] | None, manifest: dict | None, bits: int) -> tuple[Thresholds, str]:
    """(thresholds, where they came from): --thresholds/--recipe, else the candidate's recipe (manifest), else
    the built-in defaults for its bit width."""
    if explicit is not None:
        return explicit
    recorded = ((manifest or {}).get("recipe") or {}).get("thresholds")
    if recorded:
        t = build(Thresholds, recorded, "manifest.json recipe.thresholds")
        if any_set(t):
            return t, f"the candidate's recipe ({manifest['recipe'].get('name', '?')}, from manifest.json)"
    # Fewer bits than a table entry get that entry's bars (a 2-bit checkpoint must meet the INT4 bars).
    wider = [k for k in sorted(DEFAULT_THRESHOLDS) if k >= bits]
    if not wider:
        raise UsageError(f"no built-in thresholds for {bits}-bit weights", where="thresholds",
                         fix="pass --thresholds FILE or --recipe R")
    return DEFAULT_THRESHOLDS[wider[0]], f"built-in defaults for {wider[0]}-bit weights (candidate: {bits}-bit)"


def check_thresholds(metrics: dict, thresholds: Thresholds) -> list[dict]:
    """One record per threshold that is set: value, limit, passed (None: metric not measurable here), margin
    (how far past the limit, positive when broken)."""
    out = []
    for name, (metric, op) in CHECKS.items():
        limit = getattr(thresholds, name)
        if limit is None:
            continue
        value = metrics.get(metric)
        passed = None if value is None else bool(OPS[op](value, limit))
        margin = None if value is None else (value - limit if op == "<=" else limit - value)
        out.append({"threshold": name, "metric": metric, "op": op, "limit": limit, "value": value,
                    "passed": passed, "margin": margin})
    return out


def allowed(kind: str, base: float, tol: Tolerances) -> tuple[str, float]:
    """(op, limit) a metric must meet given its baseline value."""
    table = {"kl": ("<=", base * (1 + tol.kl_rel) + tol.kl_abs), "rate": (">=", base - tol.rate_abs),
             "ppl": ("<=", base + tol.ppl_ratio_abs)}
    return table[kind]


def check_baseline(metrics: dict, base_metrics: dict, tol: Tolerances) -> list[dict]:
    """One record per metric both runs measured: worse than the baseline beyond tolerance → passed False."""
    out = []
    for metric, kind in BASELINE.items():
        value, base = metrics.get(metric), base_metrics.get(metric)
        if value is None or base is None:
            continue
        op, limit = allowed(kind, base, tol)
        out.append({"metric": metric, "baseline": base, "value": value, "op": op, "limit": limit,
                    "passed": bool(OPS[op](value, limit)),
                    "margin": value - limit if op == "<=" else limit - value})
    return out


def read_baseline(path: str | Path) -> dict:
    """A report.json written by validate; InputError when missing or of another schema."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    if not path.is_file():
        raise InputError("no such baseline report", where=path, fix="pass the report.json of an earlier validate run")
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"not JSON ({exc})", where=path, fix="pass a report.json written by validate") from None
    if report.get("schema") != REPORT_SCHEMA or "candidates" not in report:
        raise InputError(f"not a validate report of schema {REPORT_SCHEMA}", where=path,
                         fix="regenerate the baseline with this version of pixtral-quant validate")
    return report


def baseline_entry(report: dict, label: str, only_one: bool, where: str) -> dict:
    """The baseline candidate matching `label` (or the only one, when both runs have one candidate)."""
    entries = report["candidates"]
    if only_one and len(entries) == 1:
        return entries[0]
    for entry in entries:
        if entry["label"] == label:
            return entry
    raise InputError(f"the baseline has no candidate labelled {label!r} (it has {[e['label'] for e in entries]})",
                     where=where, fix="validate the same candidates as the baseline run (labels = folder names)")
