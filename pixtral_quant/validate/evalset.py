"""Which held-out set validate runs on, and the guarantee that it was never calibrated on.

Default: the reference's own held-out set when it has one (the bundled tiny model → its shipped eval set),
else the built-in `eval` set. `--eval` takes any set spec `calibration.dataset.load_set` reads (a JSONL
manifest in the calibration format, a folder, hf:PATH, a built-in name).

Overlap: each candidate's manifest names its calibration set (spec, subset, seed, content hash); that set is
loaded again and compared with the eval set by content (whole samples and single images). Any overlap is an
InputError (exit 2). When the calibration set cannot be found, that is said in the report — never skipped
silently.
"""

from __future__ import annotations

from pathlib import Path

from ..assets import TINY_EVAL, TINY_MODEL
from ..calibration.dataset import CalibrationSet, load_set
from ..calibration.sampling import check_disjoint
from ..errors import InputError

DEFAULT_EVAL = {TINY_MODEL.resolve(): str(TINY_EVAL / "manifest.jsonl")}  # reference dir → its held-out set
FALLBACK_EVAL = "eval"


def eval_spec(reference_dir: Path, requested: str | None) -> str:
    """The eval set spec: the one asked for, else the reference's own, else the built-in `eval` set."""
    if requested:
        return requested
    return DEFAULT_EVAL.get(Path(reference_dir).resolve(), FALLBACK_EVAL)


def load_eval(spec: str, tokenizer, num_samples: int | None, seed: int) -> CalibrationSet:
    """The eval set (every sample must end with the assistant's reference answer: it is teacher-forced)."""
    evalset = load_set(spec, tokenizer, num_samples=num_samples, seed=seed, max_tokens=None)
    for sample in evalset.samples:
        if sample.messages[-1]["role"] != "assistant":
            raise InputError("the sample does not end with an assistant reference answer", where=sample.where,
                             fix="add the expected answer as the last, assistant message")
    return evalset


def check_overlap(candidate, evalset: CalibrationSet, tokenizer, loaded: dict | None = None) -> str:
    """InputError when the candidate's calibration samples overlap the eval set; else a one-line status for
    the report ('disjoint from <set> (<n> samples)', 'no calibration (data-free scheme)', or why unchecked).
    loaded: calibration sets already read, by their settings, shared across candidates."""
    calib = (candidate.manifest or {}).get("calibration")
    if candidate.manifest is None:
        return "not checked: the candidate has no manifest.json naming its calibration data"
    if not calib:
        return "no calibration data (data-free scheme)"
    settings = candidate.manifest["recipe"]["calibration"]
    key = tuple(settings[k] for k in ("set", "num_samples", "seed", "max_tokens"))
    loaded = {} if loaded is None else loaded
    try:
        if key not in loaded:
            loaded[key] = load_set(settings["set"], tokenizer, num_samples=settings["num_samples"],
                                   seed=settings["seed"], max_tokens=settings["max_tokens"])
        cset = loaded[key]
    except InputError as exc:
        return f"not checked: calibration set {settings['set']!r} not found here ({exc.message})"
    check_disjoint(cset, evalset, names=(f"calibration set of {candidate.label}", "evaluation"))
    same = cset.content_hash == calib.get("content_hash")
    return (f"disjoint from {settings['set']} ({len(cset)} samples"
            + ("" if same else "; its content changed since the conversion, checked against today's") + ")")
