"""sha256 of every file `convert` writes, for every scheme on the bundled tiny model: the before/after table of a
refactor that must not change a byte (issue 21). Runs each conversion in this interpreter, one after the other.

    python scripts/output_hashes.py reports/output-hashes-before.json
    python scripts/output_hashes.py /tmp/after.json --compare reports/output-hashes-before.json   # exit 1 on a diff

The calibrated schemes use the tiny model's own set with 16 samples, and gptq-mixed a 37.5 MB budget, as
tests/test_determinism.py does; gguf-q8_0 and gguf-q4_k_m (with its imatrix) stand for the GGUF family.
Two more cases calibrate the lm_head (solved in row blocks, capture.HEAD_ROW_BLOCK): gptq-int4 with an INT4 lm_head
and gptq-mixed with `lm_head: auto`, each from a recipe file written into the temporary folder (RECIPES).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

from click.testing import CliRunner

from pixtral_quant.cli import main as cli
from pixtral_quant.schemes.registry import scheme_names

SCHEMES = scheme_names() + ["gguf-q8_0", "gguf-q4_k_m", "gptq-int4+lm_head", "gptq-mixed+lm_head"]
CALIBRATED = ["--calibration", "tiny", "--num-samples", "16"]
EXTRA = {"gptq-mixed": ["--max-size", "37.5MB"]}
# case → recipe file text: the cases that need a recipe field the CLI has no flag for (targets.lm_head)
RECIPES = {"gptq-int4+lm_head": "scheme: {name: gptq-int4}\ntargets: {decoder: true, lm_head: int4}\n",
           "gptq-mixed+lm_head": "scheme: {name: gptq-mixed}\ntargets: {decoder: true, lm_head: auto}\n"}
EXTRA["gptq-mixed+lm_head"] = EXTRA["gptq-mixed"]


def hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def convert(scheme: str, out: Path) -> dict[str, str]:
    """Convert the tiny model for `scheme` (a scheme name or a RECIPES case) into `out`; the sha256 of its files."""
    calibrated = scheme.startswith("gptq") or scheme == "gguf-q4_k_m"
    if scheme in RECIPES:
        recipe = out.parent / f"{scheme}.yaml"
        recipe.write_text(RECIPES[scheme])
        source = ["--recipe", str(recipe)]
    else:
        source = ["--scheme", scheme]
    argv = ["convert", *source, *(CALIBRATED if calibrated else []), *EXTRA.get(scheme, []), "--out", str(out)]
    result = CliRunner().invoke(cli, argv, catch_exceptions=False)
    if result.exit_code != 0:
        raise SystemExit(f"{scheme}: exit {result.exit_code}\n{result.output[-2000:]}")
    return hashes(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="JSON file to write: {scheme: {file: sha256}}")
    parser.add_argument("--compare", type=Path, help="an earlier JSON: print the differences, exit 1 on any")
    parser.add_argument("--schemes", nargs="*", default=SCHEMES)
    args = parser.parse_args()
    table = {}
    with tempfile.TemporaryDirectory(prefix="pq-hashes-") as tmp:
        for scheme in args.schemes:
            table[scheme] = convert(scheme, Path(tmp) / scheme)
            print(f"{scheme}: {len(table[scheme])} files", flush=True)
    args.out.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    if args.compare is None:
        return 0
    before = json.loads(args.compare.read_text())
    diffs = [(s, f) for s in table for f in sorted(set(table[s]) | set(before.get(s, {})))
             if table[s].get(f) != before.get(s, {}).get(f)]
    for scheme, name in diffs:
        print(f"DIFFERS {scheme}: {name}")
    print("identical" if not diffs else f"{len(diffs)} files differ")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
