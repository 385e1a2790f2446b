"""A conversion survives a kill at any instant: the swap into OUT has no window without a complete checkpoint,
`--resume` continues from the last finished layer and writes the same bytes as an uninterrupted run, and a full
disk or a stale OUT.partial gets one clear message (issue 11, items 1 and 2)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from pixtral_quant.cli import main
from pixtral_quant.export import atomic, journal

CLI = [sys.executable, "-c", "import sys; from pixtral_quant.cli import main; sys.exit(main())"]
MARKER = journal.DIR


def digest(folder: Path) -> dict[str, str]:
    """name → sha256 of every file in `folder` (recursively, hidden ones included)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def checkpoint(folder: Path, tag: str) -> Path:
    """A small stand-in checkpoint whose every file says which one it is."""
    folder.mkdir(parents=True)
    for name in ("model.safetensors", "config.json", "manifest.json"):
        (folder / name).write_text(f"{tag}:{name}")
    return folder


def is_complete(folder: Path, tag: str) -> bool:
    """`folder` is checkpoint `tag`, whole (a resume journal beside it aside)."""
    return folder.is_dir() and {k: v for k, v in digest(folder).items()
                                if Path(k).parts[0] != MARKER} == digest_of(tag)


def digest_of(tag: str) -> dict[str, str]:
    return {n: hashlib.sha256(f"{tag}:{n}".encode()).hexdigest()
            for n in sorted(("model.safetensors", "config.json", "manifest.json"))}


# --- 1. the swap: at every instant OUT is the old or the new checkpoint, or recover() makes it one ------------


class Killed(BaseException):
    """Stands for SIGKILL inside the process: nothing after the raising call runs."""


# commit's steps that change the disk, in order: the exchange, each rename, each rmtree of the cleanup. The
# no-kill run checks this list (test_commit_takes_these_steps), so every step below really gets a kill.
STEPS = {True: ["exchange out.partial out", "rename out.partial out.replaced", "rmtree out.replaced",
                f"rmtree {MARKER}"],
         False: ["exchange out.partial out", "rename out out.replaced", "rename out.partial out",
                 "rmtree out.replaced", f"rmtree {MARKER}"]}


def kill_at_step(monkeypatch, n: int | None, midway: bool = False) -> list[str]:
    """The n-th step (0-based) of STEPS never happens: the process 'dies' right before it, or (midway, an rmtree)
    after deleting one of its files. Returns the steps taken."""
    taken: list[str] = []

    def step(name, real, midway_ok=False):
        def wrapped(*paths, **kw):
            if len(taken) == n:
                if midway and midway_ok:
                    next(p for p in sorted(Path(paths[0]).rglob("*")) if p.is_file()).unlink()
                raise Killed
            taken.append(" ".join([name, *(Path(p).name for p in paths)]))
            return real(*paths, **kw)
        return wrapped

    monkeypatch.setattr(atomic, "_exchange", step("exchange", atomic._exchange))
    monkeypatch.setattr(atomic.os, "rename", step("rename", os.rename))
    monkeypatch.setattr(atomic.shutil, "rmtree", step("rmtree", shutil.rmtree, midway_ok=True))
    return taken


def swap_setup(tmp_path, monkeypatch, exchange):
    out = checkpoint(tmp_path / "out", "old")
    new = checkpoint(atomic.partial_path(out), "new")
    (new / MARKER).mkdir()
    (new / MARKER / journal.STATE).write_text("{}")  # the journal is never empty: a midway rmtree deletes it
    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    return out, new


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "rename-fallback"])
def test_commit_takes_these_steps(tmp_path, monkeypatch, exchange):
    out, new = swap_setup(tmp_path, monkeypatch, exchange)
    taken = kill_at_step(monkeypatch, None)
    atomic.commit(new, out, marker=MARKER)
    assert taken == STEPS[exchange]


KILLS = [pytest.param(exchange, n, midway, id=f"{'exchange' if exchange else 'fallback'}-"
                      f"{'midway' if midway else 'before'}-{step}".replace(" ", "-"))
         for exchange in (True, False) for n, step in enumerate(STEPS[exchange])
         for midway in ((False, True) if step.startswith("rmtree") else (False,))]


@pytest.mark.parametrize("exchange,kill_at,midway", KILLS)
def test_a_kill_at_any_step_leaves_a_checkpoint_the_next_run_recovers(tmp_path, monkeypatch, exchange, kill_at,
                                                                      midway):
    out, new = swap_setup(tmp_path, monkeypatch, exchange)
    kill_at_step(monkeypatch, kill_at, midway)
    with pytest.raises(Killed):
        atomic.commit(new, out, marker=MARKER)
    monkeypatch.undo()
    # Right after the kill: OUT is complete (old or new), or (fallback, between its renames) both are complete
    # under their side names.
    assert (is_complete(out, "old") or is_complete(out, "new")
            or (is_complete(atomic.replaced_path(out), "old") and is_complete(new, "new") and not out.exists()))
    # Only a kill before the swap began (the exchange, or the fallback's first rename) leaves "old"; the new
    # checkpoint is then still there, journal and all, for --resume. Every later instant ends "new".
    expected = "old" if kill_at < (1 if exchange else 2) else "new"
    # The next run: check_out_dir recovers, then accepts OUT (with --resume exactly when there is one to resume).
    atomic.check_out_dir(out, overwrite=True, resume=expected == "old", marker=MARKER)
    assert is_complete(out, expected), (expected, sorted(p.name for p in tmp_path.iterdir()))
    assert not atomic.replaced_path(out).exists() and not (out / MARKER).exists()
    assert atomic.partial_path(out).exists() == (expected == "old")
    if expected == "old":
        assert (new / MARKER / journal.STATE).is_file()


def test_exchange_is_available_here(tmp_path):
    """The atomic path is the one this machine (and CI) takes: renameat2(RENAME_EXCHANGE) works on its disk."""
    a, b = checkpoint(tmp_path / "a", "a"), checkpoint(tmp_path / "b", "b")
    assert atomic._exchange(a, b)
    assert is_complete(a, "b") and is_complete(b, "a")


# --- 2. resume: kill -9 at a chosen layer, then --resume gives the uninterrupted run's bytes -------------------


def lm_head_recipe(tmp_path: Path, samples: int) -> Path:
    """The default tiny recipe, fewer samples, with a GPTQ-calibrated INT4 lm_head (a unit after the layers)."""
    path = tmp_path / "recipe.yaml"
    path.write_text("scheme: {name: gptq-int4}\ntargets: {decoder: true, lm_head: int4}\n"
                    f"calibration: {{set: tiny, num_samples: {samples}, seed: 0}}\n")
    return path


def units_done(partial: Path) -> int:
    try:
        return len(json.loads((partial / MARKER / journal.STATE).read_text())["units"])
    except (OSError, ValueError, KeyError):
        return 0


def convert_killed_after(argv: list[str], partial: Path, layers: int, timeout: float = 300) -> int:
    """Run convert in a child process and SIGKILL it once the journal holds `layers` units; returns how many
    units the journal holds after the kill."""
    proc = subprocess.Popen([*CLI, "convert", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while units_done(partial) < layers:
            assert proc.poll() is None, "the conversion ended before the chosen layer: nothing was killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return units_done(partial)


def cli(*argv: str):
    return subprocess.run([*CLI, "convert", *argv], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_kill_9_then_resume_is_byte_identical(tiny_model_dir, tmp_path):
    recipe = lm_head_recipe(tmp_path, samples=24)
    base = ["--model", str(tiny_model_dir), "--recipe", str(recipe)]
    reference = tmp_path / "reference"
    assert cli(*base, "--out", str(reference)).returncode == 0

    out = tmp_path / "out"
    partial = atomic.partial_path(out)
    done = convert_killed_after([*base, "--out", str(out)], partial, layers=2)
    assert 2 <= done < 5 and not out.exists()  # 4 layers + the lm_head: killed part-way
    # A stale OUT.partial is reported with the two choices, and left alone.
    before = digest(partial)
    again = cli(*base, "--out", str(out))
    assert again.returncode == 2 and "--resume" in again.stderr and f"delete {partial}" in again.stderr
    assert "Traceback" not in again.stderr and digest(partial) == before
    # Resuming with other options is refused, naming what differs.
    other = cli(*base, "--num-samples", "8", "--out", str(out), "--resume")
    assert other.returncode == 2 and "different recipe" in other.stderr
    resumed = cli(*base, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert digest(out) == digest(reference)
    assert not partial.exists() and not (out / MARKER).exists()
    losses = json.loads((out / "manifest.json").read_text())["layer_loss"]
    assert "lm_head" in losses and len(losses) == 4 * 7 + 1


@pytest.mark.slow
def test_kill_9_during_overwrite_keeps_the_old_checkpoint(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    assert cli("--model", str(tiny_model_dir), "--scheme", "rtn-int8", "--out", str(out)).returncode == 0
    old = digest(out)
    argv = ["--model", str(tiny_model_dir), "--scheme", "gptq-int4", "--calibration", "tiny", "--num-samples", "24",
            "--out", str(out), "--overwrite"]
    convert_killed_after(argv, atomic.partial_path(out), layers=1)
    assert digest(out) == old  # the old checkpoint is untouched by the killed run
    assert cli(*argv, "--resume").returncode == 0
    assert digest(out) != old and json.loads((out / "manifest.json").read_text())["recipe"]["scheme"]["name"] == "gptq-int4"
    assert not atomic.partial_path(out).exists() and not atomic.replaced_path(out).exists()


def test_interrupted_data_free_run_resumes_identically(tiny_model_dir, tmp_path, monkeypatch):
    """rtn-int4 is too fast on the tiny model to kill from outside at a chosen layer: the interruption is raised
    inside journal.save after two layers (KeyboardInterrupt: what Ctrl-C does)."""
    from pixtral_quant.convert import convert
    from pixtral_quant.recipes import load_recipe

    recipe = load_recipe("tiny-rtn-int4")
    reference = convert(tiny_model_dir, recipe, tmp_path / "reference").out
    real, saved = journal.Journal.save, []

    def save(self, unit, *args, **kwargs):
        if len(saved) == 2:
            raise KeyboardInterrupt
        saved.append(unit)
        return real(self, unit, *args, **kwargs)

    monkeypatch.setattr(journal.Journal, "save", save)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        convert(tiny_model_dir, recipe, out)
    monkeypatch.undo()
    assert units_done(atomic.partial_path(out)) == 2 and not out.exists()
    convert(tiny_model_dir, recipe, out, resume=True)
    assert digest(out) == digest(reference)


def test_resume_without_an_interrupted_run(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["convert", "--model", str(tiny_model_dir), "--scheme", "rtn-int4",
                                    "--out", str(out), "--resume"])
    assert res.exit_code == 2 and "no interrupted conversion" in res.output and not out.exists()


def test_overwrite_swaps_in_the_new_checkpoint(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    run = CliRunner().invoke
    assert run(main, ["convert", "--model", str(tiny_model_dir), "--scheme", "rtn-int8", "--out", str(out)]).exit_code == 0
    old = digest(out)
    res = run(main, ["convert", "--model", str(tiny_model_dir), "--scheme", "rtn-int4", "--out", str(out),
                     "--overwrite"])
    assert res.exit_code == 0, res.output
    assert digest(out) != old and json.loads((out / "manifest.json").read_text())["recipe"]["name"] == "rtn-int4"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# --- a full disk: refused up front with the numbers, and a disk that fills up mid-run leaves nothing -----------


@pytest.fixture
def small_fs(tmp_path):
    """A 1 MiB tmpfs (the tiny checkpoint is 41 MB): a real file system that is full for a conversion."""
    if os.geteuid() != 0:
        pytest.fail("mounting a size-limited tmpfs needs root (CI and the dev machines run as root)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_out_on_a_full_disk_is_refused_before_writing(tiny_model_dir, small_fs):
    out = small_fs / "out"
    res = CliRunner().invoke(main, ["convert", "--model", str(tiny_model_dir), "--scheme", "rtn-int4",
                                    "--out", str(out)])
    assert res.exit_code == 2 and "not enough free disk space" in res.output and str(small_fs) in res.output
    assert " free, the conversion needs " in res.output and "Traceback" not in res.output
    assert list(small_fs.iterdir()) == []


def test_disk_filling_up_mid_run_leaves_nothing(tiny_model_dir, tmp_path, monkeypatch):
    real = journal.Journal.save

    def save(self, unit, *args, **kwargs):
        if unit == journal.layer_unit(1):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, unit, *args, **kwargs)

    monkeypatch.setattr(journal.Journal, "save", save)
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["convert", "--model", str(tiny_model_dir), "--scheme", "rtn-int4",
                                    "--out", str(out)])
    assert res.exit_code == 2 and "no space left" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_symlinked_out_is_refused(tiny_model_dir, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    res = CliRunner().invoke(main, ["convert", "--model", str(tiny_model_dir), "--scheme", "rtn-int4",
                                    "--out", str(link)])
    assert res.exit_code == 2 and "symbolic link" in res.output
    assert list(real.iterdir()) == [] and not shutil.os.path.exists(atomic.partial_path(link))
