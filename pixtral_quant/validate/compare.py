"""Reference outputs vs candidate outputs → per-sample rows → aggregates overall, per task and per image-size
bucket. Pure apart from reading the samples' labels; no model code."""

from __future__ import annotations

import torch

from ..errors import UsageError
from .metrics import ppl_ratio, sqnr_db, summarize, target_nll, token_kl, top1_agree, topk_kl, topk_top1_agree
from .outputs import ModelOutputs, SampleOutput

# Largest image side after Pixtral's resize (pixels) → bucket label; the first edge that holds it wins.
SIZE_BUCKETS = ((64, "≤64 px"), (128, "65–128 px"), (256, "129–256 px"), (512, "257–512 px"), (1024, "513–1024 px"))
NO_IMAGE = "no image"


def size_bucket(image_shapes: list[tuple[int, ...]]) -> str:
    """Bucket of a sample from its encoded images' shapes ([3, H, W] each)."""
    if not image_shapes:
        return NO_IMAGE
    side = max(max(s[-2:]) for s in image_shapes)
    return next((label for edge, label in SIZE_BUCKETS if side <= edge), SIZE_BUCKETS[-1][1])


def normalize(text: str) -> str:
    """Answers compare case- and space-insensitively, ignoring one trailing full stop."""
    return " ".join(text.strip().casefold().removesuffix(".").split())


def from_logits(ref: SampleOutput, cand: SampleOutput) -> tuple:
    """(kl, top-1 agreement, nll ref, nll cand) per answer position, exact, from full logits."""
    return (token_kl(ref.answer_logits, cand.answer_logits), top1_agree(ref.answer_logits, cand.answer_logits),
            target_nll(ref.answer_logits, ref.answer_ids), target_nll(cand.answer_logits, ref.answer_ids))


def from_topk(ref: SampleOutput, cand: SampleOutput) -> tuple:
    """The same from top-k log-probabilities: KL a lower bound (metrics.topk_kl), the rest exact."""
    r, c = ref.topk, cand.topk
    return (topk_kl(r.ids, r.logprobs, c.ids, c.logprobs), topk_top1_agree(r.ids, r.logprobs, c.ids, c.logprobs),
            -r.target.double(), -c.target.double())


TEACHER_FORCED = {"logits": from_logits, "topk": from_topk}  # SampleOutput.kind → its per-position metrics


def teacher_forced(ref: SampleOutput, cand: SampleOutput) -> tuple:
    if ref.kind != cand.kind:
        raise UsageError(f"the reference run has {ref.kind} but the candidate's has {cand.kind}",
                         fix="run reference and candidates with the same --engine")
    return TEACHER_FORCED[ref.kind](ref, cand)


def sample_row(ref, cand, label: dict, decode) -> dict:
    """One sample's metrics. ref/cand: SampleOutput; label: {'id','task','bucket','answer'}; decode: ids → text."""
    kl, agree, nll_ref, nll_cand = teacher_forced(ref, cand)
    ref_text, cand_text = decode(ref.generated), decode(cand.generated)
    answer = label.get("answer")
    return {
        **{k: label.get(k) for k in ("id", "task", "bucket")},
        "tokens": int(kl.numel()), "kl_mean": float(kl.mean()), "kl_max": float(kl.max()),
        "top1_agree": int(agree.sum()), "nll_ref": float(nll_ref.sum()), "nll_cand": float(nll_cand.sum()),
        "same_output": ref.generated == cand.generated, "ref_output": ref_text, "cand_output": cand_text,
        "ref_correct": None if answer is None else normalize(ref_text) == normalize(answer),
        "cand_correct": None if answer is None else normalize(cand_text) == normalize(answer),
    }


def rows_for(ref: ModelOutputs, cand: ModelOutputs, labels: list[dict], decode) -> list[dict]:
    return [sample_row(r, c, lab, decode) for r, c, lab in zip(ref.samples, cand.samples, labels)]


def aggregate(rows: list[dict]) -> dict:
    """Metrics over a group of sample rows (see config.Thresholds for their meaning)."""
    tokens = sum(r["tokens"] for r in rows)
    kl = summarize([r["kl_mean"] for r in rows])
    scored = [r for r in rows if r["ref_correct"] is not None]
    acc_ref = sum(r["ref_correct"] for r in scored) / len(scored) if scored else None
    acc_cand = sum(r["cand_correct"] for r in scored) / len(scored) if scored else None
    return {
        "samples": len(rows), "tokens": tokens,
        "mean_kl": kl["mean"], "p95_kl": kl["p95"], "max_kl": max((r["kl_max"] for r in rows), default=0.0),
        "top1_agreement": sum(r["top1_agree"] for r in rows) / tokens if tokens else None,
        "ppl_ratio": ppl_ratio(sum(r["nll_ref"] for r in rows), sum(r["nll_cand"] for r in rows), tokens),
        "exact_match": sum(r["same_output"] for r in rows) / len(rows) if rows else None,
        "accuracy_ref": acc_ref, "accuracy_cand": acc_cand,
        "recovery": acc_cand / acc_ref if acc_ref else None,
    }


def grouped(rows: list[dict], key: str) -> dict[str, dict]:
    """{group value: aggregate} for key 'task' (by name) or 'bucket' (small to large); rows without a value are
    left out."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r.get(key) is not None:
            groups.setdefault(r[key], []).append(r)
    order = [NO_IMAGE, *(label for _, label in SIZE_BUCKETS)] if key == "bucket" else sorted(groups)
    return {g: aggregate(groups[g]) for g in order if g in groups}


def layer_sqnr(ref: ModelOutputs, cand: ModelOutputs) -> list[float]:
    """SQNR (dB) of each decoder layer's output over every position of the samples both runs kept hidden
    states for; [] when none did."""
    pairs = [(r.hidden, c.hidden) for r, c in zip(ref.samples, cand.samples)
             if r.hidden is not None and c.hidden is not None]
    if not pairs:
        return []
    layers = pairs[0][0].shape[0]
    return [sqnr_db(torch.cat([r[i] for r, _ in pairs]), torch.cat([c[i] for _, c in pairs])) for i in range(layers)]
