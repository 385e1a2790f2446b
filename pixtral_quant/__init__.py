"""pixtral-quant: quantize Pixtral vision-language models with multimodal calibration."""

__version__ = "0.1.0"
