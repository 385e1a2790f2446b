"""The per-sample token limit (`max_tokens`): keep, downsize or drop — never cut through an image.

A sample over the limit has its largest images shrunk first: every image's longest edge is capped at the
same value `cap` (smaller images are untouched), and `cap` is the largest multiple of 16 that fits, found
by bisection (tokens only grow with `cap`). If even `cap = min_edge` does not fit — the text alone is too
long, or there are too many images — the sample is dropped and counted. Truncating instead would leave an
image without its [IMG_END] or a reference answer cut mid-word, which calibrates on inputs nobody sends.
"""

from __future__ import annotations

from dataclasses import dataclass

from .images import MAX_EDGE, PATCH, capped_size, image_token_count

MIN_EDGE = 64  # below 4×4 patches an image carries little; dropping the sample is more honest


@dataclass(frozen=True)
class Fit:
    """action: 'keep' | 'downsize' | 'drop'; cap: longest edge (px) images are resized to fit (MAX_EDGE
    when kept as is); sizes: (W, H) each image is handed to the encoder at (before the 16-px round-up);
    tokens: total tokens of the sample as fitted (of the original when dropped); reason: for drops."""

    action: str
    cap: int
    sizes: tuple[tuple[int, int], ...]
    tokens: int
    reason: str = ""


def tokens_at(text_tokens: int, sizes: list[tuple[int, int]], cap: int) -> int:
    """Total tokens when every image's longest edge is capped at `cap`."""
    return text_tokens + sum(image_token_count(w, h, cap) for w, h in sizes)


def fit(text_tokens: int, sizes: list[tuple[int, int]], max_tokens: int | None, min_edge: int = MIN_EDGE) -> Fit:
    """Decide how a sample of `text_tokens` text tokens and images of `sizes` (W, H) meets `max_tokens`."""
    full = tokens_at(text_tokens, sizes, MAX_EDGE)
    if max_tokens is None or full <= max_tokens:
        return Fit("keep", MAX_EDGE, tuple(capped_size(w, h) for w, h in sizes), full)
    if not sizes or tokens_at(text_tokens, sizes, min_edge) > max_tokens:
        why = "text alone" if not sizes or text_tokens >= max_tokens else f"even with images at {min_edge} px"
        return Fit("drop", 0, (), full, f"{full} tokens > max_tokens {max_tokens} ({why})")
    lo, hi = min_edge // PATCH, MAX_EDGE // PATCH  # caps in patches: lo fits, hi does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if tokens_at(text_tokens, sizes, mid * PATCH) <= max_tokens else (lo, mid)
    cap = lo * PATCH
    return Fit("downsize", cap, tuple(capped_size(w, h, cap) for w, h in sizes), tokens_at(text_tokens, sizes, cap))
