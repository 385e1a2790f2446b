"""Write into `OUT.partial/`, rename to `OUT` at the end: a crash never leaves a half-written OUT, and bad input
is refused before anything is touched."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import UsageError

SUFFIX = ".partial"


def check_out_dir(out: Path, overwrite: bool) -> None:
    """UsageError when OUT exists and holds files (unless overwrite) or is a file. Touches nothing."""
    if out.exists() and not out.is_dir():
        raise UsageError("the output path exists and is not a directory", where=out, fix="choose another --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UsageError("the output directory exists and is not empty", where=out,
                         fix="choose a new --out, empty it, or pass --overwrite")


def partial_dir(out: Path) -> Path:
    """A fresh, empty OUT.partial (a stale one from a crashed run is removed)."""
    tmp = out.with_name(out.name + SUFFIX)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit(tmp: Path, out: Path) -> Path:
    """Replace OUT by the finished OUT.partial."""
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out
