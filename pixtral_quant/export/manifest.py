"""manifest.json: what was done and with what — recipe, plan, tool and library versions, calibration set hash,
per-layer loss — and the sha256 of every other file of the checkpoint. Nothing time- or path-dependent, so
the same inputs give the same bytes."""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path

MANIFEST = "manifest.json"
LIBRARIES = ("pixtral-quant", "torch", "transformers", "safetensors", "mistral-common", "numpy", "gptqmodel",
             "bitsandbytes", "optimum")


def versions() -> dict[str, str | None]:
    """Installed version of each library that can shape the output (None when absent)."""
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(out: Path, body: dict) -> Path:
    """manifest.json = body + {'files': {name: {'bytes', 'sha256'}}} over every other file in `out`."""
    files = {p.name: {"bytes": p.stat().st_size, "sha256": sha256(p)}
             for p in sorted(out.iterdir()) if p.is_file() and p.name != MANIFEST}
    path = out / MANIFEST
    path.write_text(json.dumps({**body, "files": files}, indent=2, sort_keys=True) + "\n")
    return path


def read_manifest(out: Path) -> dict:
    return json.loads((out / MANIFEST).read_text())
