"""manifest.json: what was done and with what — recipe, plan, tool and library versions, calibration set hash,
per-layer loss — and the sha256 of every other file of the checkpoint. Nothing time- or path-dependent, so
the same inputs give the same bytes."""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path

MANIFEST = "manifest.json"
TOOL = "pixtral-quant convert"
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
    """manifest.json = body + {'files': {name: {'bytes', 'sha256'}}} over every other file in `out` but the model
    card, then the card (README.md, card.py) made from it: every exporter writes both through here."""
    from .card import CARD, write_card

    files = {p.name: {"bytes": p.stat().st_size, "sha256": sha256(p)}
             for p in sorted(out.iterdir()) if p.is_file() and p.name not in (MANIFEST, CARD)}
    path = out / MANIFEST
    path.write_text(json.dumps({**body, "files": files}, indent=2, sort_keys=True) + "\n")
    write_card(out, json.loads(path.read_text()))  # from the file, as validate --update-card makes it again
    return path


def read_manifest(out: Path) -> dict:
    return json.loads((out / MANIFEST).read_text())


def body(ckpt, recipe, plan, result, side: list[str]) -> dict:
    """The manifest body of a checkpoint conversion (uniform.py, mixed.py adds its allocation): recipe, source,
    versions, calibration, plan, per-Linear loss and the side files copied. result: pipeline.runtime.ConvertResult;
    plan: plan.Plan."""
    return {
        "tool": TOOL,
        "recipe": recipe.to_dict(),
        "source": source(ckpt),
        "versions": versions(),
        "calibration": calibration(recipe, result),
        "plan": plan.to_list(),
        "layer_loss": {k: result.layer_loss[k] for k in sorted(result.layer_loss)},
        "side_files": side,
    }


def source(ckpt) -> dict:
    """The source model: its name as given, its format and weight files, and the license its own model card
    declares (None without one: the output's card then says Pixtral-12B's apache-2.0, export/card.py)."""
    return {"model": ckpt.source, "format": ckpt.format, "weight_files": [f.name for f in ckpt.weight_files],
            "license": source_license(Path(ckpt.path))}


def source_license(folder: Path) -> str | None:
    """`license` from the front matter of the source's README.md (Pixtral Large: other / mrl), else None."""
    card = folder / "README.md"
    if not card.is_file():
        return None
    import yaml
    from huggingface_hub import metadata_load

    try:
        return (metadata_load(card) or {}).get("license")
    except (ValueError, TypeError, yaml.YAMLError):  # front matter that is not YAML declares nothing
        return None


def calibration(recipe, result) -> dict | None:
    """The calibration set (name, content hash) and what the vision pass saw (result.stats: capture.CaptureStats);
    None for a data-free conversion."""
    stats = result.stats
    return None if result.calibration_hash is None else {
        "set": recipe.calibration.set, "content_hash": result.calibration_hash, "samples": len(stats.tokens),
        "tokens": sum(stats.tokens), "images": sum(stats.images), "vision_images": sum(stats.vision_images),
        "text_only": recipe.calibration.text_only}
