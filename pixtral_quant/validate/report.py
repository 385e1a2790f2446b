"""Writing a validate report: report.json (the whole dict, schema versioned), report.md (tables + figures),
the PNGs of plots.py. Written into DIR.partial and renamed, like checkpoints."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..export import atomic

COLUMNS = (("mean KL", "mean_kl", "{:.2e}"), ("p95 KL", "p95_kl", "{:.2e}"), ("top-1 agree", "top1_agreement", "{:.4f}"),
           ("ppl ratio", "ppl_ratio", "{:.4f}"), ("same output", "exact_match", "{:.3f}"),
           ("acc ref", "accuracy_ref", "{:.3f}"), ("acc cand", "accuracy_cand", "{:.3f}"),
           ("recovery", "recovery", "{:.3f}"))


def check_report_dir(out: Path) -> None:
    """UsageError unless `out` is new, empty or an earlier report (it is replaced as a whole). Checked before
    any model runs, so a typo never costs a validation run nor wipes an unrelated folder."""
    from ..errors import UsageError

    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "report.json").is_file())):
        raise UsageError("the report folder exists and holds something other than a validate report", where=out,
                         fix="pick a new --report-dir (it is replaced as a whole), e.g. reports/validate-NAME")

TERMINAL = ("mean_kl", "top1_agreement", "exact_match", "recovery")  # the columns that fit 80 characters


def write_report(report: dict, out: Path) -> Path:
    """report.json + report.md + figures in `out` (replaced if it exists)."""
    from .plots import FIGURES

    tmp = atomic.partial_dir(out)
    figures = {}
    for name, draw in FIGURES.items():
        drawn = draw(report, tmp / name)
        if drawn:
            figures[name] = drawn
    report = {**report, "figures": sorted(figures)}
    (tmp / "report.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    (tmp / "report.md").write_text(markdown(report))
    return atomic.commit(tmp, out)


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def fmt(value, pattern: str = "{:.4g}") -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return pattern.format(value)


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def markdown(report: dict) -> str:
    ref, ev = report["reference"], report["eval"]
    lines = [f"# pixtral-quant validate: {verdict(report['passed'])}", "",
             f"Reference `{ref['source']}` ({ref['format']}, {ref['weight_bytes'] / 1e6:.1f} MB); eval set "
             f"`{ev['set']}` ({ev['samples']} samples, {ev['content_hash'][:19]}…); device {report['device']}; "
             f"torch {report['versions'].get('torch')}, transformers {report['versions'].get('transformers')}. "
             "Teacher-forced metrics are taken at the positions that predict the reference answer; 'same output' "
             "compares free greedy generations; accuracy compares them with the ground-truth answers.",
             *engine_line(report.get("engine")), "",
             "| candidate | bits | size | " + " | ".join(c[0] for c in COLUMNS) + " | verdict |",
             "| --- | ---: | ---: | " + " | ".join("---:" for _ in COLUMNS) + " | --- |"]
    for c in report["candidates"]:
        m = c["metrics"]["overall"]
        cells = [fmt(m.get(key), pattern) for _, key, pattern in COLUMNS]
        lines.append(f"| {c['label']} | {c['bits']} | {c['weight_bytes'] / 1e6:.1f} MB | " + " | ".join(cells)
                     + f" | {verdict(c['passed'])} |")
    for c in report["candidates"]:
        lines += candidate_section(c)
    lines += [f"![{name}]({name})" for name in report.get("figures", [])]
    return "\n".join(lines) + "\n"


def engine_line(engine: dict | None) -> list[str]:
    """The engine that ran the models and what the teacher-forced metrics come from (reports before the
    engine option have none)."""
    if not engine:
        return []
    parallel = "" if engine["name"] == "transformers" else (
        f" (tensor parallel {engine['tensor_parallel_size']}, pipeline parallel {engine['pipeline_parallel_size']}, "
        f"executor {engine['distributed_executor_backend'] or 'default'})")
    return [f"Engine: {engine['name']}{parallel}; teacher-forced metrics: {engine['teacher_forced']}."]


def candidate_section(c: dict) -> list[str]:
    lines = ["", f"## {c['label']}: {verdict(c['passed'])}", "", f"Thresholds: {c['thresholds']['source']}. "
             f"Calibration data vs eval set: {c['calibration_overlap']}.", "",
             "| check | limit | value | result |", "| --- | ---: | ---: | --- |"]
    for r in c["checks"]:
        result = "n/a (not measurable on this set)" if r["passed"] is None else (
            "pass" if r["passed"] else f"**FAIL** by {fmt(r['margin'])}")
        lines.append(f"| {r['threshold']} ({r['metric']} {r['op']}) | {fmt(r['limit'])} | {fmt(r['value'])} | {result} |")
    if "baseline" in c:
        lines += ["", f"Against the baseline's `{c['baseline']['label']}`:", "",
                  "| metric | baseline | now | allowed | result |", "| --- | ---: | ---: | ---: | --- |"]
        for r in c["baseline"]["checks"]:
            lines.append(f"| {r['metric']} | {fmt(r['baseline'])} | {fmt(r['value'])} | {r['op']} {fmt(r['limit'])} | "
                         + ("pass" if r["passed"] else f"**FAIL** by {fmt(r['margin'])}") + " |")
    for title, key in (("task", "by_task"), ("image size", "by_size")):
        lines += group_table(title, c["metrics"][key])
    if c["layer_sqnr_db"]:
        lines += ["", "Decoder layer output SQNR (dB): " + ", ".join(f"{i}: {fmt(v, '{:.1f}')}"
                                                                   for i, v in enumerate(c["layer_sqnr_db"]))]
    return lines


def group_table(title: str, groups: dict) -> list[str]:
    if not groups:
        return []
    lines = ["", f"| {title} | samples | " + " | ".join(col for col, _, _ in COLUMNS) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in COLUMNS) + " |"]
    for name, m in groups.items():
        lines.append(f"| {name} | {m['samples']} | " + " | ".join(fmt(m.get(k), p) for _, k, p in COLUMNS) + " |")
    return lines


def terminal_summary(report: dict):
    """A rich Table, one row per candidate, and the verdict lines (each broken check named with its margin)."""
    from rich.table import Table

    columns = [c for c in COLUMNS if c[1] in TERMINAL]
    table = Table("candidate", "size", *(col for col, _, _ in columns), "verdict",
                  title=f"validate vs {report['reference']['source']} on {report['eval']['samples']} held-out samples")
    for c in report["candidates"]:
        m = c["metrics"]["overall"]
        table.add_row(c["label"], f"{c['weight_bytes'] / 1e6:.1f} MB", *(fmt(m.get(k), p) for _, k, p in columns),
                      "[green]PASS[/]" if c["passed"] else "[red]FAIL[/]")
    return table, failure_lines(report)


def failure_lines(report: dict) -> list[str]:
    """'label: threshold (metric op limit) broken: value (by margin)' for each failed check."""
    out = []
    for c in report["candidates"]:
        for r in c["checks"]:
            if r["passed"] is False:
                out.append(f"{c['label']}: {r['threshold']} broken: {r['metric']} = {fmt(r['value'])}, must be "
                           f"{r['op']} {fmt(r['limit'])} (off by {fmt(r['margin'])})")
        for r in c.get("baseline", {}).get("checks", []):
            if not r["passed"]:
                out.append(f"{c['label']}: {r['metric']} regressed vs baseline: {fmt(r['value'])}, was "
                           f"{fmt(r['baseline'])}, allowed {r['op']} {fmt(r['limit'])} (off by {fmt(r['margin'])})")
    return out
