"""Statistics of a calibration/evaluation set: what GPTQ will see, in tokens.

Pure functions over per-sample rows; `to_markdown` feeds calibration/README.md and `to_rich` the
`pixtral-quant calib inspect` command.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field

# Longest-edge buckets (px) of the images as stored; the last two are resized by Pixtral's rule.
SIZE_BUCKETS = ((0, 32, "<32"), (32, 128, "32-127"), (128, 256, "128-255"), (256, 512, "256-511"),
                (512, 1024, "512-1023"), (1024, 1025, "1024"), (1025, 2048, "1025-2047"), (2048, 1 << 40, ">=2048"))


@dataclass(frozen=True)
class SampleStats:
    """One kept sample. sizes: (W, H) as stored (upright); text/image_tokens: counts in its encoding."""

    id: str
    task: str
    sizes: tuple[tuple[int, int], ...]
    text_tokens: int
    image_tokens: int
    downsized: bool = False


@dataclass
class SetStats:
    """Aggregates over the kept samples; `dropped` lists (sample where, reason)."""

    name: str
    samples: int
    images: int
    per_task: dict[str, dict]
    images_per_sample: dict[int, int]
    size_histogram: dict[str, int]
    tokens_per_sample: dict[str, dict[str, float]]
    text_tokens: int
    image_tokens: int
    downsized: int = 0
    dropped: list[tuple[str, str]] = field(default_factory=list)
    notes: dict[str, int] = field(default_factory=dict)
    content_hash: str = ""

    @property
    def total_tokens(self) -> int:
        return self.text_tokens + self.image_tokens

    @property
    def image_token_share(self) -> float:
        return self.image_tokens / self.total_tokens if self.total_tokens else 0.0


def size_bucket(width: int, height: int) -> str:
    """Histogram label for an image by its longest edge."""
    edge = max(width, height)
    return next(label for lo, hi, label in SIZE_BUCKETS if lo <= edge < hi)


def summarize(name: str, rows: list[SampleStats], dropped=(), notes: Counter | None = None,
              content_hash: str = "") -> SetStats:
    """SetStats of the kept `rows`."""
    sizes = [s for r in rows for s in r.sizes]
    buckets = Counter(size_bucket(w, h) for w, h in sizes)
    return SetStats(
        name=name, samples=len(rows), images=len(sizes), per_task=_per_task(rows),
        images_per_sample=dict(sorted(Counter(len(r.sizes) for r in rows).items())),
        size_histogram={label: buckets[label] for _, _, label in SIZE_BUCKETS if buckets[label]},
        tokens_per_sample={k: _spread([f(r) for r in rows]) for k, f in _TOKEN_KINDS.items()},
        text_tokens=sum(r.text_tokens for r in rows), image_tokens=sum(r.image_tokens for r in rows),
        downsized=sum(r.downsized for r in rows), dropped=list(dropped), notes=dict(notes or {}),
        content_hash=content_hash,
    )


_TOKEN_KINDS = {
    "text": lambda r: r.text_tokens,
    "image": lambda r: r.image_tokens,
    "total": lambda r: r.text_tokens + r.image_tokens,
}


def _spread(values: list[int]) -> dict[str, float]:
    if not values:
        return {"min": 0, "median": 0, "mean": 0.0, "max": 0}
    return {"min": min(values), "median": statistics.median(values), "mean": round(statistics.fmean(values), 1),
            "max": max(values)}


def _per_task(rows: list[SampleStats]) -> dict[str, dict]:
    out = {}
    for task in sorted({r.task for r in rows}):
        mine = [r for r in rows if r.task == task]
        image, text = sum(r.image_tokens for r in mine), sum(r.text_tokens for r in mine)
        out[task] = {"samples": len(mine), "images": sum(len(r.sizes) for r in mine),
                     "tokens": image + text, "image_token_share": round(image / max(image + text, 1), 3)}
    return out


def to_dict(stats: SetStats) -> dict:
    """JSON-ready dict (for --json and checkpoint manifests)."""
    out = asdict(stats)
    out.update(total_tokens=stats.total_tokens, image_token_share=round(stats.image_token_share, 4))
    out["dropped"] = [{"sample": w, "reason": r} for w, r in stats.dropped]
    return out


def to_markdown(stats: SetStats) -> str:
    """Markdown tables: per task, images per sample, size histogram, tokens per sample."""
    lines = [f"**{stats.name}**: {stats.samples} samples, {stats.images} images, {stats.total_tokens:,} tokens "
             f"({stats.image_tokens:,} image = {stats.image_token_share:.1%}, {stats.text_tokens:,} text); "
             f"content hash `{stats.content_hash}`", "",
             "| task | samples | images | tokens | image-token share |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {t} | {d['samples']} | {d['images']} | {d['tokens']:,} | {d['image_token_share']:.1%} |"
              for t, d in stats.per_task.items()]
    lines += ["", "| images per sample | " + " | ".join(map(str, stats.images_per_sample)) + " |",
              "|---" * (len(stats.images_per_sample) + 1) + "|",
              "| samples | " + " | ".join(map(str, stats.images_per_sample.values())) + " |", "",
              "| longest edge (px) | " + " | ".join(stats.size_histogram) + " |",
              "|---" * (len(stats.size_histogram) + 1) + "|",
              "| images | " + " | ".join(map(str, stats.size_histogram.values())) + " |", "",
              "| tokens per sample | min | median | mean | max |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {k} | {v['min']} | {v['median']} | {v['mean']} | {v['max']} |"
              for k, v in stats.tokens_per_sample.items()]
    return "\n".join(lines) + "\n"


def to_rich(stats: SetStats) -> list:
    """rich renderables for the terminal (same content as to_markdown, plus drops and notes)."""
    from rich.table import Table

    head = Table.grid(padding=(0, 2))
    head.add_column(no_wrap=True)
    head.add_column(overflow="fold")  # the content hash must stay copyable in full
    for label, value in _headline(stats):
        head.add_row(label, value)
    tasks = _table("task", ["samples", "images", "tokens", "image share"],
                   [(t, d["samples"], d["images"], f"{d['tokens']:,}", f"{d['image_token_share']:.1%}")
                    for t, d in stats.per_task.items()])
    per = _table("images/sample", ["samples"], list(stats.images_per_sample.items()))
    hist = _table("longest edge px", ["images"], list(stats.size_histogram.items()))
    toks = _table("tokens/sample", ["min", "median", "mean", "max"],
                  [(k, v["min"], v["median"], v["mean"], v["max"]) for k, v in stats.tokens_per_sample.items()])
    return [head, tasks, per, hist, toks]


def _headline(stats: SetStats) -> list[tuple[str, str]]:
    rows = [("set", stats.name), ("samples", str(stats.samples)), ("images", str(stats.images)),
            ("tokens", f"{stats.total_tokens:,} (text {stats.text_tokens:,}, image {stats.image_tokens:,} = "
                       f"{stats.image_token_share:.1%})"),
            ("content hash", stats.content_hash)]
    if stats.downsized or stats.dropped:
        rows.append(("max_tokens", f"{stats.downsized} downsized, {len(stats.dropped)} dropped"))
    rows += [("dropped", f"{w}: {r}") for w, r in stats.dropped[:10]]
    rows += [("note", f"{n} × {note}") for note, n in stats.notes.items()]
    return rows


def _table(first: str, columns: list[str], rows: list[tuple]):
    from rich.table import Table

    table = Table(first, *columns, show_edge=False, pad_edge=False)
    for row in rows:
        table.add_row(*map(str, row))
    return table
