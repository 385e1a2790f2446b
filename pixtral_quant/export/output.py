"""The one output run of every exporter (convert.EXPORTERS: uniform.py, mixed.py, gguf/export.py): free disk
checked → the plan shown → OUT.partial → the exporter writes into it → on failure the keep/discard policy (and a
full disk as one clear InputError) → atomic swap into OUT (atomic.py). Only the writing differs per exporter."""

from __future__ import annotations

import errno
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ..errors import InputError, PixtralQuantError
from . import atomic
from .journal import DIR as MARKER

T = TypeVar("T")


@dataclass(frozen=True)
class Output:
    """What an exporter writes, for the failure messages and policy. what: named in the full-disk error ("the
    checkpoint"); fix: that error's fix; resumable: the exporter keeps a resume journal in OUT.partial, so an
    interrupted run (Ctrl-C, a crash, out of memory) keeps it for --resume instead of deleting it."""

    what: str
    fix: str
    resumable: bool = False


def check_free_disk(out: Path, need: int, what: str) -> None:
    """InputError when the file system OUT will be on has fewer than `need` bytes free (`what` says for what)."""
    from ..memory.units import fmt_bytes

    parent = next(p for p in out.absolute().parents if p.exists())
    free = shutil.disk_usage(parent).free
    if free < need:
        raise InputError(f"not enough free disk space: {fmt_bytes(free)} free, the conversion needs "
                         f"{fmt_bytes(need)} ({what})", where=parent,
                         fix="free disk space or choose an --out on a larger file system")


def run_output(out: Path, output: Output, write: Callable[[Path], T], reporter, *, shown, resume: bool = False,
               need: tuple[int, str] | None = None) -> T:
    """write(OUT.partial) → its result, once OUT.partial is swapped into OUT. need: (bytes, for what) checked
    against the free disk first (None: no check, as for a resumed run whose earlier run checked); shown: the plan
    (a rich renderable) logged after every input is checked, so that for bad input the error is all that is
    printed; resume: continue in the existing OUT.partial (the journal kept, the rest removed)."""
    if need is not None:
        check_free_disk(out, *need)
    reporter.log(shown)
    tmp = atomic.partial_dir(out, resume, keep=MARKER)
    try:
        result = write(tmp)
    except BaseException as exc:
        after_failure(exc, tmp, output, resume, reporter)
        raise
    atomic.commit(tmp, out, marker=MARKER)  # the journal (or marker) goes once the swap is done
    return result


def after_failure(exc: BaseException, tmp: Path, output: Output, resume: bool, reporter) -> None:
    """Bad input found on the way (and a full disk) leaves nothing behind, but a resumed run keeps what earlier
    runs finished; anything else (Ctrl-C, a crash, the machine running out of memory) keeps OUT.partial of a
    resumable output so that --resume continues from its last finished unit, and discards any other."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        if not resume:
            atomic.discard(tmp)
        raise InputError(f"no space left on the device while writing {output.what}", where=tmp.parent,
                         fix=output.fix) from None
    if isinstance(exc, PixtralQuantError) or not output.resumable:
        if not resume:
            atomic.discard(tmp)
        return
    reporter.log(f"interrupted: the finished layers are kept in {tmp}; run the same command with --resume to "
                 f"continue, or delete {tmp} to start over")
