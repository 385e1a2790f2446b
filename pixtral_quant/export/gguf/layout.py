"""The files of a GGUF output directory (what `convert --scheme gguf-*` writes), by role.

Fixed names: the type, recipe and calibration live in the GGUF metadata (general.file_type) and in manifest.json,
never in the file names. The mmproj name starts with `mmproj` because LM Studio and Ollama's importers pick the
vision file out of a folder by that prefix.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import InputError

TEXT, MMPROJ, IMATRIX = "text", "mmproj", "imatrix"
FILES: dict[str, str] = {TEXT: "model.gguf", MMPROJ: "mmproj-model.gguf", IMATRIX: "imatrix.gguf"}
REQUIRED = (TEXT, MMPROJ)


def is_gguf_dir(path: str | Path) -> bool:
    """True when `path` is a folder holding a GGUF text model as convert writes it."""
    return (Path(path) / FILES[TEXT]).is_file()


def files(path: str | Path) -> dict[str, Path]:
    """Role → path of the files present in a GGUF output folder; InputError when a required one is missing."""
    path = Path(path)
    found = {role: path / name for role, name in FILES.items() if (path / name).is_file()}
    missing = [FILES[r] for r in REQUIRED if r not in found]
    if missing:
        raise InputError(f"not a GGUF output folder: {', '.join(missing)} missing", where=path,
                         fix="pass the folder `pixtral-quant convert --scheme gguf-...` wrote")
    return found
