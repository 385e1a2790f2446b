"""Peak resident memory of a whole process tree: run a command and sample, from /proc, the summed RSS of the
process and every descendant it starts (a worker pool, a compiler a library spawns; see tree_rss). measure.peak_rss is one
process's exact high-water mark; this is the tree's, sampled (a spike shorter than the interval can be missed,
so callers report the larger of the two).

    from pixtral_quant.diagnostics.tree import run_sampled
    result = run_sampled([sys.executable, "job.py"], timeout=3600)
    result.tree_peak_rss, result.returncode, result.stdout

Written by hand: psutil is not a dependency of this project, and this needs only /proc/<pid>/stat, statm and smaps_rollup.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
INTERVAL_S = 0.2  # sampling period: one /proc scan costs about a millisecond per hundred processes


@dataclass(frozen=True)
class Sampled:
    """What the command did: exit status, its output, wall seconds, and the largest tree_rss (bytes) seen in any
    one sample, with the number of processes in that sample."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    tree_peak_rss: int
    tree_peak_processes: int
    samples: int
    timed_out: bool = False


def _parents() -> dict[int, int]:
    """pid → parent pid of every process visible in /proc (ones that exit while being read are left out)."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:  # the process exited between the listing and the read
            continue
        # Field 4 (ppid) follows the command name, which is in parentheses and may itself contain spaces.
        out[int(entry.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
    return out


def descendants(root: int) -> list[int]:
    """root and every process below it, from one /proc scan."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _parents().items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def private_bytes(pid: int) -> int:
    """Pages only this process maps (smaps_rollup Private_Clean + Private_Dirty); 0 once it has exited."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return sum(int(ln.split()[1]) * 1024 for ln in f if ln.startswith(("Private_Clean:", "Private_Dirty:")))
    except (OSError, IndexError, ValueError):
        return 0


def _vm(pid: int) -> tuple[int, int] | None:
    try:
        with open(f"/proc/{pid}/statm") as f:
            size, rss = f.read().split()[:2]
        return int(size), int(rss)
    except (OSError, ValueError):
        return None


def tree_rss(root: int) -> tuple[int, int]:
    """(bytes, processes) of root and its descendants now: the root's RSS plus each descendant's private pages.
    Why not the sum of RSS: a child forked (or vforked, sharing the very same memory) on the way to exec shows
    the parent's resident pages as its own, and summing would count them twice; a descendant whose memory
    layout is identical to the root's is that case and is left out."""
    pids = descendants(root)
    own = _vm(root)
    total = 0 if own is None else own[1] * PAGE
    for pid in pids[1:]:
        if _vm(pid) != own:
            total += private_bytes(pid)
    return total, len(pids)


def run_sampled(cmd: list[str], *, env: dict | None = None, timeout: float | None = None,
                interval: float = INTERVAL_S, cwd: str | Path | None = None) -> Sampled:
    """Run `cmd` to completion (killed after `timeout` seconds), sampling its tree's RSS every `interval` s.
    stdout/stderr go through temporary files (a pipe could fill up and stall a long job)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd, text=True)
        peak = [0, 0, 0]  # bytes, processes, samples
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                rss, n = tree_rss(proc.pid)
                peak[2] += 1
                if rss > peak[0]:
                    peak[0], peak[1] = rss, n
                stop.wait(interval)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.kill()
            proc.wait()
        finally:
            stop.set()
            sampler.join()
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        return Sampled(proc.returncode, out.read(), err.read(), seconds, peak[0], peak[1], peak[2], timed_out)
