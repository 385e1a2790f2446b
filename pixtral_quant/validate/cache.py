"""The reference run on disk, keyed by content: validating several candidates (now or in later runs) against
one reference runs the reference once, and only one model is ever in memory.

Key = sha256 over the reference's weight/config file hashes, the eval set's content hash and the run options
that shape the outputs (the engine among them: runs of different engines never share an entry). Layout:
CACHE/reference/<key>/outputs.safetensors (logits.i or topk_ids.i + topk_logprobs.i + target.i, answer.i,
hidden.i) + meta.json (generated ids); written to <key>.partial and renamed, so a crashed run never leaves a bad entry.
Logits are stored in float32 at the answer positions only: A × vocab × 4 bytes per sample (Pixtral-12B, vocab
131072: 0.5 MB per answer token, so 68 samples × 50 tokens ≈ 1.8 GB on disk and in memory when compared).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch

from ..export.manifest import sha256
from .outputs import ModelOutputs, SampleOutput, TopK

ENV = "PIXTRAL_QUANT_CACHE"
FORMAT = 1  # bump when what is stored changes


def cache_root() -> Path:
    """$PIXTRAL_QUANT_CACHE, else $XDG_CACHE_HOME/pixtral-quant, else ~/.cache/pixtral-quant."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pixtral-quant"


def model_hash(files: list[Path]) -> str:
    """sha256 over (name, sha256) of the model's files (weights, config): same bytes → same key."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda p: p.name):
        h.update(f"{f.name}\0{sha256(f)}\n".encode())
    return h.hexdigest()


def reference_key(model_digest: str, eval_hash: str, options: dict) -> str:
    body = json.dumps({"format": FORMAT, "model": model_digest, "eval": eval_hash, "options": options},
                      sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:32]


def load(root: Path, key: str, hidden_samples: int) -> ModelOutputs | None:
    """The cached reference outputs with per-layer outputs for the first `hidden_samples` samples, or None when
    absent or when the entry kept fewer of those (the layer-SQNR sample count is not part of the key)."""
    from safetensors import safe_open

    entry = root / "reference" / key
    if not (entry / "meta.json").is_file():
        return None
    meta = json.loads((entry / "meta.json").read_text())
    if meta.get("hidden_samples", 0) < min(hidden_samples, len(meta["generated"])):
        return None
    out = ModelOutputs()
    with safe_open(str(entry / "outputs.safetensors"), "pt") as f:
        stored = set(f.keys())
        for i, generated in enumerate(meta["generated"]):
            hidden = f.get_tensor(f"hidden.{i}") if i < hidden_samples else None
            logits = f.get_tensor(f"logits.{i}") if f"logits.{i}" in stored else None
            topk = TopK(*(f.get_tensor(f"{name}.{i}") for name in TOPK)) if f"{TOPK[0]}.{i}" in stored else None
            out.samples.append(SampleOutput(logits, f.get_tensor(f"answer.{i}"), generated, hidden, topk))
    return out


TOPK = ("topk_ids", "topk_logprobs", "target")  # the stored tensors of a TopK, in its field order


def store(root: Path, key: str, outputs: ModelOutputs) -> Path:
    """Write the entry atomically; returns its folder."""
    from safetensors.torch import save_file

    entry = root / "reference" / key
    tmp = entry.with_name(key + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors: dict[str, torch.Tensor] = {}
    for i, s in enumerate(outputs.samples):
        if s.answer_logits is not None:
            tensors[f"logits.{i}"] = s.answer_logits.contiguous()
        if s.topk is not None:
            for name, t in zip(TOPK, (s.topk.ids, s.topk.logprobs, s.topk.target)):
                tensors[f"{name}.{i}"] = t.contiguous()
        tensors[f"answer.{i}"] = s.answer_ids.contiguous()
        if s.hidden is not None:
            tensors[f"hidden.{i}"] = s.hidden.contiguous()
    save_file(tensors, str(tmp / "outputs.safetensors"))
    kept = sum(s.hidden is not None for s in outputs.samples)
    (tmp / "meta.json").write_text(json.dumps({"generated": [s.generated for s in outputs.samples],
                                               "hidden_samples": kept}))
    shutil.rmtree(entry, ignore_errors=True)
    tmp.rename(entry)
    return entry
