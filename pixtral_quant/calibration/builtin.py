"""Where the built-in sets live: `calibration/{calib,eval,tiny}/manifest.jsonl` at the repository root.

The repository's folder is the source of truth; a wheel or sdist carries a copy (setup.py), and one lookup finds
either (assets.shipped_folder). PIXTRAL_QUANT_CALIBRATION can point elsewhere (e.g. a copy on a cluster).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..assets import shipped_folder
from ..errors import InputError

BUILTIN = {"calib": "calib", "eval": "eval", "tiny": "tiny"}  # set name → subfolder of the calibration root
# tiny: the bundled tiny model's own tasks (scripts/make_tiny_calibration.py), for calibrating it.
PREFIX = "builtin:"
ENV = "PIXTRAL_QUANT_CALIBRATION"


def calibration_root() -> Path:
    """The folder holding the built-in sets."""
    env = os.environ.get(ENV)
    return Path(env) if env else shipped_folder("calibration")


def builtin_name(spec: str) -> str | None:
    """'calib' for 'calib' or 'builtin:calib'; None when `spec` does not name a built-in set."""
    name = spec[len(PREFIX):] if spec.startswith(PREFIX) else spec
    if name in BUILTIN:
        return name
    if spec.startswith(PREFIX):
        raise InputError(f"no built-in set {name!r}", where=spec, fix=f"use one of {[PREFIX + n for n in BUILTIN]}")
    return None


def builtin_manifest(name: str) -> Path:
    """manifest.jsonl of built-in set `name`, or InputError saying how to get it."""
    path = calibration_root() / BUILTIN[name] / "manifest.jsonl"
    if not path.is_file():
        raise InputError(f"built-in set {name!r} not found at {path}", where=PREFIX + name,
                         fix=f"reinstall pixtral-quant (its wheel carries the built-in sets), set {ENV} to a "
                             "calibration folder, or rebuild it with `python scripts/make_calibration_sets.py`")
    return path
