"""Byte sizes as people type them ("8GiB", "14 GB", "512MiB") and as reports print them.

GB / MB are decimal (1e9 / 1e6), GiB / MiB binary (2**30 / 2**20). A bare number is refused: `--max-size 37`
was read as 37 GiB once and ran ten minutes on a 37 MB model (issue 24), and "8" means 8 GB to some and 8 GiB to
others. Cards sold as "8 GB" or "80 GB" have 8 GiB / 80 GiB of memory: pass `8GiB`. Answers about a size the user
gave are written in the unit they typed (`in_unit`).
"""

from __future__ import annotations

import math
import re

from ..errors import UsageError

GIB = 2**30
MIB = 2**20
# unit (lower case) → bytes (no "" entry: a bare number is refused, NoUnit)
UNITS: dict[str, float] = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
                           "kib": 2**10, "mib": MIB, "gib": GIB, "tib": 2**40}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")


class NoUnit(UsageError):
    """A size given as a bare number: the fix names both readings (config._is_size lets it through)."""


def parse_size(text: str, where: str = "size") -> int:
    """'8GiB' → 8589934592; '14 GB' → 14000000000; '512MiB' → 536870912. UsageError for anything else, a bare
    number (str, int or float: a YAML `fit: 8`) included."""
    m = _SIZE.match(str(text)) if not isinstance(text, bool) else None
    unit = m.group(2).lower() if m else None
    if m is not None and unit == "":
        raise NoUnit(f"{text!r} has no unit", where=where,
                     fix=f"write {m.group(1)}GB (decimal, like file sizes) or {m.group(1)}GiB (binary, like "
                         "GPU memory)")
    if m is None or unit not in UNITS:
        raise UsageError(f"cannot read {text!r} as a size", where=where,
                         fix="write a number and a unit: 8GiB, 14GB, 512MiB")
    return int(round(float(m.group(1)) * UNITS[unit]))


def unit_of(text: str) -> str:
    """The unit as the user typed it ('30MB' → 'MB', '8 gib' → 'gib'); text parse_size accepts."""
    return _SIZE.match(str(text)).group(2)


def in_unit(n: int, unit: str, up: bool = False) -> str:
    """Bytes in the user's unit with two decimals: in_unit(36640224, 'MB') → '36.64MB'; up=True rounds up (a
    minimum the user can pass back: '36.65MB')."""
    value = n / UNITS[unit.lower()]
    value = math.ceil(value * 100) / 100 if up else round(value, 2)
    return f"{value:g}{unit}"


def gib(n: float) -> float:
    """Bytes → GiB (float)."""
    return n / GIB


def file_bytes(n: float) -> str:
    """Sizes of files and checkpoints, decimal as the Hub, `ls --si` and max_size_gb write them: '41.3 MB',
    '7.48 GB'. Memory (GPU, RSS) is binary: fmt_bytes."""
    if abs(n) >= 1e9:
        return f"{n / 1e9:.2f} GB"
    if abs(n) >= 1e6:
        return f"{n / 1e6:.1f} MB"
    return f"{n / 1e3:.1f} kB" if abs(n) >= 1e3 else f"{int(n)} B"


def count(n: int) -> str:
    """Parameter or element counts in words, never a unit that reads as bytes: '20.65 million', '12.68 billion'."""
    return f"{n / 1e9:.2f} billion" if n >= 1e9 else f"{n / 1e6:.2f} million"


def fmt_bytes(n: float) -> str:
    """Memory, human-readable: GiB from 256 MiB up, MiB from 1 MiB, else KiB / bytes (files: file_bytes)."""
    if abs(n) >= 2**28:
        return f"{n / GIB:.2f} GiB"
    if abs(n) >= MIB:
        return f"{n / MIB:.1f} MiB"
    return f"{n / 2**10:.1f} KiB" if abs(n) >= 2**10 else f"{int(n)} B"
