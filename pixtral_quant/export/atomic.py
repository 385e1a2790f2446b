"""Write into `OUT.partial/`, then swap it into `OUT`: a kill at any instant leaves OUT either the old complete
checkpoint or the new complete one, never neither and never a mix. Bad input is refused before anything is touched.

The swap is one `renameat2(RENAME_EXCHANGE)` system call where the file system has it (Linux ≥ 3.15: ext4, xfs,
btrfs, tmpfs, overlayfs): OUT and OUT.partial trade places atomically, then the old checkpoint (now under
OUT.partial's name) is renamed to OUT.replaced and deleted. Elsewhere the fallback renames OUT aside to
OUT.replaced first; a kill between its two renames leaves OUT missing and both checkpoints complete, and
`recover` (run before every conversion) completes the swap. (Python has no exchange call: renameat2 through
ctypes, written here.)
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import shutil
from pathlib import Path

from ..errors import UsageError

SUFFIX = ".partial"
REPLACED = ".replaced"
RENAME_EXCHANGE = 2  # linux/fs.h


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + SUFFIX)


def replaced_path(out: Path) -> Path:
    return out.with_name(out.name + REPLACED)


def check_out_dir(out: Path, overwrite: bool, resume: bool = False, marker: str | None = None) -> None:
    """UsageError when OUT is a symlink or a file, holds files (unless overwrite), or a stale OUT.partial is there
    without `resume` (or missing with it). Touches nothing but a killed swap's leftovers (`recover`)."""
    recover(out, marker)
    if out.is_symlink():
        raise UsageError("the output path is a symbolic link", where=out,
                         fix="pass the real directory as --out (a swap would replace the link, not its target)")
    if out.exists() and not out.is_dir():
        raise UsageError("the output path exists and is not a directory", where=out, fix="choose another --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UsageError("the output directory exists and is not empty", where=out,
                         fix="choose a new --out, empty it, or pass --overwrite")
    tmp = partial_path(out)
    if resume and not tmp.is_dir():
        raise UsageError("--resume: there is no interrupted conversion to resume", where=tmp,
                         fix="run without --resume")
    if tmp.exists() and not resume:
        raise UsageError("an interrupted conversion left this folder", where=tmp,
                         fix=f"pass --resume to continue it, or delete {tmp} to start over")


def partial_dir(out: Path, resume: bool = False, keep: str | None = None) -> Path:
    """OUT.partial: when resuming, the existing one with everything but `keep` (the resume journal) removed (a
    killed run's scratch files and half-written shards); else a new empty folder (callers that keep nothing across
    runs, like validate's report folder, get a stale one removed; convert refuses a stale one first)."""
    tmp = partial_path(out)
    if resume:
        for entry in tmp.iterdir():
            if entry.name != keep:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        return tmp
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def discard(tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)


def commit(tmp: Path, out: Path, marker: str | None = None) -> Path:
    """Make the finished OUT.partial the new OUT (see the module docstring for why no instant lacks one).
    marker: a folder inside OUT.partial (convert's resume journal) that is deleted only after the swap, so
    `recover` can tell a swapped-out old checkpoint (no marker) from a finished, not yet swapped new one."""
    _fsync_tree(tmp, skip=marker)
    if not out.exists():
        os.rename(tmp, out)
    elif _exchange(tmp, out):
        os.rename(tmp, replaced_path(out))  # tmp now holds the old checkpoint
    else:
        os.rename(out, replaced_path(out))
        os.rename(tmp, out)
    fsync_path(out.parent)
    _cleanup(out, marker)
    return out


def recover(out: Path, marker: str | None = None) -> None:
    """Finish what a killed `commit` left, forward when the new checkpoint is complete:
    - OUT missing, OUT.replaced there (the fallback was killed between its renames): OUT.partial, complete since
      the swap had begun, becomes OUT; without it the old checkpoint goes back;
    - OUT holds the marker (the swap happened, the cleanup did not finish): an OUT.partial without the marker is
      the old checkpoint swapped out; it goes, and so do the marker and OUT.replaced."""
    old, tmp = replaced_path(out), partial_path(out)
    if not out.exists() and old.is_dir():
        os.rename(tmp if tmp.is_dir() else old, out)
    if marker and (out / marker).is_dir() and tmp.is_dir() and not (tmp / marker).is_dir():
        shutil.rmtree(tmp)
    _cleanup(out, marker)


def _cleanup(out: Path, marker: str | None) -> None:
    shutil.rmtree(replaced_path(out), ignore_errors=True)
    if marker:
        shutil.rmtree(out / marker, ignore_errors=True)


@functools.cache
def _renameat2():
    libc = ctypes.CDLL(None, use_errno=True)
    return getattr(libc, "renameat2", None)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths; False where the platform or file system cannot (then the caller falls back)."""
    fn = _renameat2()
    if fn is None:
        return False
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _fsync_tree(root: Path, skip: str | None = None) -> None:
    """Flush every file and folder of `root` (but `skip`) so the swap never publishes data still in the cache."""
    for path in sorted(root.rglob("*")):
        if path.is_file() and not (skip and path.relative_to(root).parts[0] == skip):
            fsync_path(path)
    fsync_path(root)


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
