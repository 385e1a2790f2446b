"""gguf-<type>: llama.cpp GGUF files. Nothing is quantized Linear by Linear here: the GGUF exporter
(export/gguf/export.py) writes the model once and llama.cpp's own quantizer does the rest, with the importance
matrix the calibration set gives (export/gguf/calibrate.py). This handler tells convert which exporter runs and
what the scheme needs."""

from __future__ import annotations

from ..errors import require
from ..export.gguf.ftypes import PYTHON_TYPES

EXTRA = "llamacpp"  # pip extra with llama-cpp-python and gguf


class GgufHandler:
    """Handler for config.Gguf."""

    extra = EXTRA
    exporter = "gguf"
    group_size = None

    def __init__(self, config):
        self.config = config
        self.name = config.name
        # llama.cpp ignores an importance matrix for the types the gguf package writes itself (no K/IQ blocks)
        self.needs_calibration = config.imatrix and config.type not in PYTHON_TYPES

    def require(self) -> None:
        """gguf writes every file; llama-cpp-python quantizes the text model (not needed for f16/bf16/q8_0)."""
        require("gguf", EXTRA)
        if self.config.type not in PYTHON_TYPES:
            require("llama_cpp", EXTRA)
