"""Quantize a GGUF text model with llama.cpp's own quantizer (`llama_model_quantize`, through llama-cpp-python's
ctypes bindings): K-quants, IQ types and importance-matrix weighting are llama.cpp's, never re-implemented here.

    quantize_file("out/model-f16.gguf", "out/model.gguf", "q4_k_m", imatrix=payloads)

What llama.cpp does to the file (src/llama-quant.cpp, llama.cpp 0c1e57098): it copies every key/value of the
input, sets general.file_type and general.quantization_version, keeps the tensor set and picks each tensor's type
itself (ported in `ktypes` so sizes can be predicted without running it). Its log (one line per tensor) is
captured instead of printed; the tail of it goes into the error when quantization fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from ...errors import InputError, UsageError, require
from . import ftypes

EXTRA = "llamacpp"  # the pip extra that installs llama-cpp-python (and gguf)
LOG_TAIL = 8  # log lines of llama.cpp quoted in an error
LOG_ERROR, LOG_CONT = 4, 5  # ggml.h GGML_LOG_LEVEL_ERROR / _CONT (llama_cpp._logger's comment is outdated)


def _llama_cpp():
    return require("llama_cpp", EXTRA)


def check_type(type_name: str, has_imatrix: bool) -> str:
    """The llama.cpp file type name, lower-cased. UsageError for a name llama.cpp does not know (listing the
    valid ones) and for a type llama.cpp only writes with an importance matrix when there is none."""
    key = type_name.lower()
    if key not in ftypes.FILE_TYPES:
        raise UsageError(f"unknown GGUF type {type_name!r}", where="scheme",
                         fix=f"use one of: {ftypes.valid_types()}")
    if key in ftypes.NEED_IMATRIX and not has_imatrix:
        raise UsageError(f"llama.cpp writes GGUF type {key} only with an importance matrix", where="imatrix",
                         fix="calibrate an importance matrix (--imatrix images|text) or choose a type such as q4_k_m")
    return key


def imatrix_array(llama_cpp, imatrix: Mapping[str, np.ndarray]):
    """(NULL-terminated ctypes array of llama_model_imatrix_data, the buffers it points into). The caller keeps
    both alive until llama_model_quantize returns: ctypes holds raw pointers into the numpy arrays and names.
    imatrix: GGUF tensor name → float32 [in] (Σx² / tokens per input column; imatrix.quantize_payload)."""
    Entry = llama_cpp.llama_model_imatrix_data
    keep: list[object] = []
    array = (Entry * (len(imatrix) + 1))()  # zero-filled: the last entry is the {NULL, NULL, 0} terminator
    for i, (name, values) in enumerate(sorted(imatrix.items())):
        data = np.ascontiguousarray(np.asarray(values, dtype=np.float32).reshape(-1))
        encoded = name.encode()
        keep += [data, encoded]
        array[i].name = encoded
        array[i].data = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        array[i].size = data.size
    return array, keep


@contextlib.contextmanager
def captured_log(llama_cpp) -> Iterator[list[tuple[int, str]]]:
    """Route llama.cpp's log into a list of (ggml_log_level, text) for the duration (llama_log_set), then give it
    back to llama-cpp-python's own handler (llama_cpp._logger, which it installs at import)."""
    from llama_cpp import _logger

    lines: list[tuple[int, str]] = []

    def collect(level: int, text: bytes, user_data) -> None:
        if level == LOG_CONT and lines:  # a continuation keeps the level of the piece it continues
            level = lines[-1][0]
        lines.append((level, text.decode("utf-8", errors="replace")))

    callback = llama_cpp.llama_log_callback(collect)  # referenced here so it outlives the native call
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    try:
        yield lines
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


def _errors(lines: list[tuple[int, str]]) -> str:
    """llama.cpp's error lines (GGML_LOG_LEVEL_ERROR), else the last lines of its log, without its ==== rules.
    It logs pieces of lines, so the texts are joined before splitting into lines."""
    errors = "".join(text for level, text in lines if level == LOG_ERROR) or "".join(text for _, text in lines)
    text = [line.strip() for line in errors.splitlines() if line.strip() and not line.startswith("=")]
    return "\n".join(text[-LOG_TAIL:])


def quantize_file(src: str | Path, dst: str | Path, type_name: str,
                  imatrix: Mapping[str, np.ndarray] | None = None, nthread: int = 0) -> Path:
    """Quantize the GGUF `src` (a text model as writer.write_text_gguf writes it, F16/BF16/F32) into `dst` as
    llama.cpp file type `type_name` (ftypes.FILE_TYPES). imatrix: GGUF tensor name → float32 [in] payload, or
    None. nthread ≤ 0: llama.cpp uses every core. Written as `<dst>.partial` and renamed: a failure leaves
    nothing. UsageError for a bad type; InputError (with llama.cpp's last log lines) when llama.cpp refuses."""
    key = check_type(type_name, bool(imatrix))
    llama_cpp = _llama_cpp()
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise InputError("no such GGUF file", where=src, fix="write the F16 text GGUF first (write_text_gguf)")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftypes.FILE_TYPES[key]
    params.nthread = nthread
    keep = None
    if imatrix:
        array, keep = imatrix_array(llama_cpp, imatrix)
        params.imatrix = ctypes.cast(array, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
        keep.append(array)
    partial = dst.with_name(dst.name + ".partial")
    try:
        with captured_log(llama_cpp) as log:
            rc = llama_cpp.llama_model_quantize(os.fsencode(src), os.fsencode(partial), ctypes.byref(params))
        if rc != 0:
            raise InputError(f"llama.cpp could not quantize to {key}:\n{_errors(log)}", where=src,
                             fix="the lines above are llama.cpp's; an importance matrix must have one float32 "
                             "[in] array per GGUF weight name, and the IQ types and q2_k_s need one")
        os.replace(partial, dst)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        del keep  # the buffers the native call read from may go now
    return dst
