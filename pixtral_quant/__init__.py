"""pixtral-quant: quantize Pixtral vision-language models with multimodal calibration."""

from . import reproducible  # noqa: F401 - first: MKL's reproducible mode is set before any of our torch math

__version__ = "0.1.0"
