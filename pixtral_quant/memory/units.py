"""Byte sizes as people type them ("8GiB", "14 GB", "512MiB", "7.5") and as reports print them.

GB / MB are decimal (1e9 / 1e6), GiB / MiB binary (2**30 / 2**20); a bare number is GiB. Cards sold as
"8 GB" or "80 GB" have 8 GiB / 80 GiB of memory: pass `8GiB`.
"""

from __future__ import annotations

import re

from ..errors import UsageError

GIB = 2**30
MIB = 2**20
# unit (lower case) → bytes; "" is the unit of a bare number.
UNITS: dict[str, float] = {"": GIB, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
                           "kib": 2**10, "mib": MIB, "gib": GIB, "tib": 2**40}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int | float, where: str = "size") -> int:
    """'8GiB' → 8589934592; '14 GB' → 14000000000; '7.5' → 7.5 GiB; an int or float is GiB too."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return int(round(float(text) * GIB))
    m = _SIZE.match(str(text))
    unit = m.group(2).lower() if m else None
    if m is None or unit not in UNITS:
        raise UsageError(f"cannot read {text!r} as a size", where=where,
                         fix="write a number and a unit: 8GiB, 14GB, 512MiB (a bare number is GiB)")
    return int(round(float(m.group(1)) * UNITS[unit]))


def gib(n: float) -> float:
    """Bytes → GiB (float)."""
    return n / GIB


def fmt_bytes(n: float) -> str:
    """Human-readable: GiB from 256 MiB up, MiB from 1 MiB, else KiB / bytes."""
    if abs(n) >= 2**28:
        return f"{n / GIB:.2f} GiB"
    if abs(n) >= MIB:
        return f"{n / MIB:.1f} MiB"
    return f"{n / 2**10:.1f} KiB" if abs(n) >= 2**10 else f"{int(n)} B"
