#!/usr/bin/env python
"""Peak host RSS of `pixtral-quant convert` on synthetic models of one width at two depths (default 4 and 16
decoder layers): bounded-memory conversion means the two peaks are within 10 % of each other.

Each conversion runs in a fresh process (pixtral_quant.diagnostics.measure: VmHWM, after-import baseline
reported apart). Runs: RTN INT4 with small shards (max_shard_gb below one layer's output), RTN INT4 with the
default 5 GB shards (flat too: convert streams each tensor to disk), GPTQ INT4 with small shards. Then the 12B figure is extrapolated from the measured
terms (pixtral_quant.diagnostics.conversion) and written with the measurements to reports/rss-vs-depth.{md,json}.

    python scripts/rss_vs_depth.py                        # about 10 minutes on 2 cores
    python scripts/rss_vs_depth.py --runs rtn-small --layers 2 8 --hidden 1024   # quick
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pixtral_quant.diagnostics.rss import (  # noqa: E402
    NOTES, RUNS, extrapolate_12b, measure_depths, render_extrapolation, render_markdown, repredict, synthetic_config)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, nargs=2, default=(4, 16), help="the two depths")
    ap.add_argument("--hidden", type=int, default=2048, help="decoder width (intermediate = 3.5 x)")
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "rss-vs-depth")
    ap.add_argument("--work", type=Path, help="scratch directory (default: a temporary one)")
    ap.add_argument("--merge", type=Path, nargs="+", help="no measuring: merge these JSON reports, re-predict "
                    "every row, add the 12B extrapolation, write --out")
    args = ap.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out)
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        config_dir = synthetic_config(Path(work) / "config", args.hidden)
        report = measure_depths(config_dir, list(args.layers), args.runs, Path(work), log=print)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(render_markdown(report))
    print(render_markdown(report))
    return 0 if all(r["flat"] for r in report["runs"] if r["expect_flat"]) else 1


def merge(paths: list[Path], out: Path) -> int:
    """One Markdown + JSON from several measured reports (e.g. RTN at one width, GPTQ at a smaller one)."""
    reports = [repredict(json.loads(p.read_text())) for p in paths]
    baseline = min(r["baseline_rss"] for rep in reports for run in rep["runs"] for r in run["rows"])
    extra = extrapolate_12b(baseline)
    out.with_suffix(".json").write_text(json.dumps({"reports": reports, "extrapolated_12b": extra}, indent=2) + "\n")
    text = "\n".join(render_markdown(rep) for rep in reports)
    out.with_suffix(".md").write_text(text + "\n" + "\n".join(render_extrapolation(extra)) + "\n" + NOTES)
    print(out.with_suffix(".md").read_text())
    return 0 if all(r["flat"] for rep in reports for r in rep["runs"] if r["expect_flat"]) else 1


if __name__ == "__main__":
    sys.exit(main())
