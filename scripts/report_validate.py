"""Make reports/validate-tiny/: `pixtral-quant validate` of every tiny recipe's checkpoint, plus a broken one
(layer 1's output projections zeroed), against the bundled tiny Pixtral on its full held-out set.

    python scripts/report_validate.py [--out reports/validate-tiny] [--work /tmp/validate-report]

One reference run (cached by content), then each candidate in turn; each candidate is held to the thresholds
its recipe recorded in its manifest (the broken one: those of gptq-int8, the checkpoint it was made from).
Also gptq-int4 with the INT4 lm_head that the pixtral-12b-int4 recipe ships with.
The run's verdict is expected to be FAIL because of the broken candidate; the others must pass.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from pixtral_quant.cli.convert_report import RichReporter
from pixtral_quant.config import ValidateConfig, with_overrides
from pixtral_quant.convert import convert
from pixtral_quant.fixtures.broken import zero_layer
from pixtral_quant.recipes import load_recipe
from pixtral_quant.validate.pipeline import validate
from pixtral_quant.validate.report import failure_lines

SCHEMES = ("gptq-int8", "rtn-int8", "bnb-int8", "gptq-int4", "rtn-int4", "bnb-nf4")
# Variants (folder name → recipe and overrides): the INT4 lm_head that pixtral-12b-int4 ships with.
VARIANTS = {"gptq-int4-lm_head-int4": ("tiny-gptq-int4", {"targets.lm_head": "int4"})}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("reports/validate-tiny"))
    p.add_argument("--work", type=Path, default=Path("/tmp/validate-report"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--layer-sqnr", type=int, default=8, help="samples for the per-layer SQNR plot")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    candidates = []
    jobs = {s: (f"tiny-{s}", {}) for s in SCHEMES} | VARIANTS
    for folder, (recipe, overrides) in jobs.items():
        out = args.work / folder
        if not (out / "manifest.json").is_file():
            shutil.rmtree(out, ignore_errors=True)
            convert("tiny", with_overrides(load_recipe(recipe), overrides) if overrides else load_recipe(recipe), out)
        candidates.append(out)
    candidates.append(zero_layer(args.work / "gptq-int8", args.work / "gptq-int8-layer1-zeroed", 1))
    shutil.rmtree(args.out, ignore_errors=True)
    cfg = ValidateConfig(layer_sqnr_samples=args.layer_sqnr)
    report = validate("tiny", candidates, cfg, report_dir=args.out, reporter=RichReporter())
    print((args.out / "report.md").read_text())
    print("\n".join(failure_lines(report)))


if __name__ == "__main__":
    main()
