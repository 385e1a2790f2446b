"""Image references (calibration/refs.py) → encoded image bytes: relative paths, data: URLs, http(s) URLs,
dataset cells.

A reference is classified once (when the manifest is read) and read on demand through `READERS`, a table
from kind to reader, so a new source is one entry. Relative paths resolve inside their root folder only
(refs.resolve_inside).
"""

from __future__ import annotations

import base64
import binascii
import http.client
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from ..errors import InputError
from .refs import ImageRef, resolve_inside

HTTP_TIMEOUT_S = 20.0
HTTP_MAX_BYTES = 64 * 1024 * 1024  # larger downloads are refused rather than buffered
_DATA_URL = re.compile(r"^data:image/[\w.+-]+;base64,", re.IGNORECASE)
FIX_OFFLINE = "download the image next to the manifest (e.g. images/NAME.jpg) and reference that relative path"


def read_bytes(ref: ImageRef, where: str) -> bytes:
    """The encoded bytes `ref` points at (JPEG/PNG/... as stored)."""
    return READERS[ref.kind](ref, where)


def _read_path(ref: ImageRef, where: str) -> bytes:
    path = resolve_inside(Path(ref.root), ref.value, where)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read image file {ref.value!r} ({exc})", where=where,
                         fix="check the file's permissions") from None


def _read_data_url(ref: ImageRef, where: str) -> bytes:
    match = _DATA_URL.match(ref.value)
    if match is None:
        raise InputError(f"data URL {ref.label()!r} is not of the form data:image/<type>;base64,<data>",
                         where=where, fix="encode the image as data:image/png;base64,... (standard base64)")
    try:
        return base64.b64decode(ref.value[match.end():], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"data URL payload is not valid base64 ({exc})", where=where,
                         fix="re-encode the image with base64.b64encode") from None


def _read_http(ref: ImageRef, where: str) -> bytes:
    request = urllib.request.Request(ref.value, headers={"User-Agent": "pixtral-quant"})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            data = response.read(HTTP_MAX_BYTES + 1)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InputError(f"cannot fetch {ref.value} ({reason}; timeout {HTTP_TIMEOUT_S:.0f} s)", where=where,
                         fix=FIX_OFFLINE) from None
    if len(data) > HTTP_MAX_BYTES:
        raise InputError(f"{ref.value} is larger than {HTTP_MAX_BYTES >> 20} MiB", where=where, fix=FIX_OFFLINE)
    return data


def _read_dataset_cell(ref: ImageRef, where: str) -> bytes:
    from .sources import read_hf_image  # lazy: only datasets-on-disk need the `datasets` package

    return read_hf_image(ref, where)


READERS: dict[str, Callable[[ImageRef, str], bytes]] = {
    "path": _read_path,
    "data": _read_data_url,
    "http": _read_http,
    "hf": _read_dataset_cell,
}
