"""The resume journal of a conversion: `OUT.partial/.resume/`.

Every finished unit of work (decoder layer i, the calibrated lm_head) is saved there as one safetensors file the
moment it is done, with the numbers needed to continue: per-Linear losses and, for calibrated schemes, the
float32 scales/zeros that reproduce the solver's dequantized weights bit for bit (the float16 scales in the
checkpoint would not, and the next layer's calibration inputs depend on them). `state.json` names the conversion
(recipe, source files, calibration content) so a resume never mixes two different runs.

Each file is written to a temporary name, flushed and renamed, and `state.json` is rewritten the same way after
it: a kill at any instant leaves the journal at the last unit recorded in `state.json`. The shards are assembled
from the journal at the end, so the checkpoint's bytes do not depend on where (or whether) the run was
interrupted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..errors import UsageError
from .atomic import fsync_path

DIR = ".resume"
STATE = "state.json"
RESTORE = "restore."  # tensor-name prefix of the resume-only tensors inside a unit file


def layer_unit(i: int) -> str:
    return f"layer-{i:05d}"


HEAD_UNIT = "head"


class Journal:
    """Units saved under `root` (OUT.partial/.resume). fingerprint: JSON-able description of the conversion."""

    def __init__(self, partial: Path, fingerprint: dict):
        self.root = partial / DIR
        self.fingerprint = fingerprint
        self.units: dict[str, dict] = {}

    @classmethod
    def start(cls, partial: Path, fingerprint: dict) -> Journal:
        journal = cls(partial, fingerprint)
        journal.root.mkdir(parents=True, exist_ok=True)
        journal._write_state()
        return journal

    @classmethod
    def reopen(cls, partial: Path, fingerprint: dict) -> Journal:
        """The journal of an interrupted run; UsageError when it is missing or belongs to another conversion."""
        journal = cls(partial, fingerprint)
        state_file = journal.root / STATE
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            raise UsageError("--resume: this folder holds no resumable conversion", where=partial,
                             fix=f"delete {partial} and convert again without --resume") from None
        if state.get("fingerprint") != _jsonable(fingerprint):
            field = _first_difference(state.get("fingerprint") or {}, fingerprint)
            raise UsageError(f"--resume: the interrupted conversion used a different {field}", where=partial,
                             fix=f"resume with the same model, recipe and options, or delete {partial} to start over")
        journal.units = state["units"]
        return journal

    def has(self, unit: str) -> bool:
        return unit in self.units

    def save(self, unit: str, tensors: dict[str, torch.Tensor], restore: dict[str, torch.Tensor],
             losses: dict[str, float], done: list[str]) -> None:
        """Record one finished unit: its checkpoint tensors (runtime names, in output order), resume-only
        tensors, GPTQ losses and the planned module names it completed."""
        from safetensors.torch import save_file

        path = self.root / f"{unit}.safetensors"
        tmp = path.with_name(path.name + ".tmp")
        body = {**{k: v.contiguous() for k, v in tensors.items()},
                **{RESTORE + k: v.contiguous() for k, v in restore.items()}}
        save_file(body, tmp, metadata={"order": json.dumps(list(tensors))})
        fsync_path(tmp)
        os.replace(tmp, path)
        self.units[unit] = {"losses": losses, "done": done}
        self._write_state()

    def tensors(self, unit: str) -> list[tuple[str, torch.Tensor]]:
        """A unit's checkpoint tensors in the order they were produced (the resume-only ones are not read)."""
        return self.read(unit, with_restore=False)[0]

    def read(self, unit: str, with_restore: bool = True) -> tuple[list[tuple[str, torch.Tensor]], dict]:
        """(checkpoint tensors in order, resume-only tensors by name) of a unit, from one pass over its file."""
        from safetensors import safe_open

        with safe_open(self.root / f"{unit}.safetensors", framework="pt") as f:
            order = json.loads(f.metadata()["order"])
            tensors = [(name, f.get_tensor(name)) for name in order]
            restore = {k[len(RESTORE):]: f.get_tensor(k) for k in f.keys()
                       if with_restore and k.startswith(RESTORE)}
        return tensors, restore

    def _write_state(self) -> None:
        path = self.root / STATE
        tmp = path.with_name(STATE + ".tmp")
        tmp.write_text(json.dumps({"fingerprint": _jsonable(self.fingerprint), "units": self.units}, indent=1,
                                  sort_keys=True))
        fsync_path(tmp)
        os.replace(tmp, path)


def _jsonable(value):
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _first_difference(old: dict, new: dict) -> str:
    """The first field of `new` (in its own order: the cause before its effects) that differs from `old`."""
    for key, value in new.items():
        if old.get(key) != _jsonable(value):
            return key
    return "setting"
