"""The package as users install it (issue 20, item 1): an sdist built from this checkout, a wheel built from that
sdist, its files installed on their own (no checkout on the path, run from a folder outside the repo), and the
commands that need recipes/ and calibration/ from it: the default convert, a shipped calibrated recipe, plan with a
12B recipe, calib inspect of the big built-in set."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("recipes", "calibration")
CLI = [sys.executable, "-c", "import sys; from pixtral_quant.cli import main; sys.exit(main())"]


def _tree(folder: Path) -> dict[str, str]:
    """relative path → sha256 of every file under `folder` (no caches)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def _hook(hook: str, source: Path, target: Path) -> Path:
    """Run a PEP 517 hook of setuptools.build_meta in `source` (a subprocess: the hook chdirs and imports
    setup.py). Returns the file it built in `target`."""
    code = f"import setuptools.build_meta as b, sys; print(b.{hook}(sys.argv[1]))"
    out = subprocess.run([sys.executable, "-c", code, str(target)], cwd=source, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return target / out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site folder holding the wheel's files, the wheel, a run folder outside the repo)."""
    base = tmp_path_factory.mktemp("wheel")
    sdist = _hook("build_sdist", ROOT, base)
    with tarfile.open(sdist) as tar:
        tar.extractall(base / "src", filter="data")
    (src,) = (base / "src").iterdir()
    wheel = _hook("build_wheel", src, base)
    site = base / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(site),
                    str(wheel)], check=True)
    run = base / "run"
    run.mkdir()
    return site, wheel, run


def _run(installed, *argv: str) -> subprocess.CompletedProcess:
    site, _, run = installed
    # Only the installed files: PYTHONPATH puts them before the editable install, and cwd is outside the repo.
    env = {k: v for k, v in os.environ.items() if k != "PIXTRAL_QUANT_CALIBRATION"} | {"PYTHONPATH": str(site)}
    return subprocess.run([*CLI, *argv], cwd=run, env=env, capture_output=True, text=True, timeout=900)


def test_the_sdist_and_the_wheel_carry_recipes_and_calibration_byte_for_byte(installed):
    site, wheel, _ = installed
    for name in SHIPPED:
        assert _tree(site / "pixtral_quant" / "_shipped" / name) == _tree(ROOT / name), name
    names = zipfile.ZipFile(wheel).namelist()
    assert "pixtral_quant/_shipped/recipes/tiny-gptq-int4.yaml" in names
    assert "pixtral_quant/_shipped/calibration/calib/manifest.jsonl" in names


def test_the_installed_package_is_the_one_that_runs(installed):
    site, _, run = installed
    out = subprocess.run([sys.executable, "-c", "import pixtral_quant, pixtral_quant.recipes as r; "
                          "print(pixtral_quant.__file__); print(r.RECIPES_DIR)"],
                         cwd=run, env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True)
    module, recipes = out.stdout.split()
    assert Path(module).is_relative_to(site) and Path(recipes) == site / "pixtral_quant" / "_shipped" / "recipes"


@pytest.mark.slow
def test_from_the_wheel_the_default_convert_and_a_shipped_recipe_work_outside_the_repo(installed):
    _, _, run = installed
    default = _run(installed, "convert")
    assert default.returncode == 0, default.stderr[-3000:]
    assert (run / "out" / "model.safetensors").is_file()
    assert '"set": "tiny"' in (run / "out" / "manifest.json").read_text()  # the tiny recipe's own shipped set
    int8 = _run(installed, "convert", "--recipe", "tiny-gptq-int8", "--num-samples", "8", "--out", "int8")
    assert int8.returncode == 0, int8.stderr[-3000:]
    assert '"bits": 8' in (run / "int8" / "config.json").read_text()


def test_from_the_wheel_plan_and_calib_inspect_find_their_shipped_files(installed):
    plan = _run(installed, "plan", "--recipe", "pixtral-12b-int8")
    assert plan.returncode == 0 and "fits" in plan.stdout, plan.stderr[-3000:]
    calib = _run(installed, "calib", "inspect", "calib")
    assert calib.returncode == 0, calib.stderr[-3000:]
    assert "total" in calib.stdout and "270" in calib.stdout  # the 270 built-in calibration samples
