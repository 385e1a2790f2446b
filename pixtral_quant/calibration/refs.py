"""An image reference as a sample lists it, before anything is read: its kind, value and root folder, and the
rule that relative paths stay inside that folder. Shared by the readers (fetch.py), the samples (sample.py) and
the set readers (manifest.py, sources.py), so none of them imports another for it.

Relative paths resolve inside their root folder only: `../x.png`, absolute paths and symlinks leading out of it
are errors (a shared manifest must not read arbitrary files on the machine that runs it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError


@dataclass(frozen=True)
class ImageRef:
    """kind: a key of fetch.READERS; value: relative path, URL or dataset cell 'column/row'; root: the folder
    relative paths live in (manifest folder or dataset directory)."""

    kind: str
    value: str
    root: str = ""

    def label(self) -> str:
        """Short form for messages (data URLs are long)."""
        return self.value if len(self.value) <= 80 else self.value[:60] + "…"


def classify(url_or_path: str) -> str:
    """The READERS kind for a manifest's image string."""
    low = url_or_path[:8].lower()
    return next((kind for prefix, kind in _PREFIXES.items() if low.startswith(prefix)), "path")


_PREFIXES = {"data:": "data", "http://": "http", "https://": "http", "file://": "path"}


def resolve_inside(root: Path, value: str, where: str) -> Path:
    """Absolute path of `value` (relative, or file:// URL) that must stay inside `root`; else InputError."""
    rel = value[len("file://"):] if value.lower().startswith("file://") else value
    base = root.resolve()
    target = (base / rel).resolve()  # resolve() follows symlinks: a link pointing outside is an escape too
    if Path(rel).is_absolute() or not target.is_relative_to(base):
        raise InputError(f"image path {value!r} leads outside the manifest folder {base}", where=where,
                         fix="copy the image into the manifest's folder (e.g. images/) and use a relative path")
    if not target.is_file():
        raise InputError(f"image file {value!r} does not exist (looked for {target})", where=where,
                         fix="check the spelling and that the path is relative to the manifest's folder")
    return target
