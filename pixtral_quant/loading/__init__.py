"""Load, inspect and write Pixtral checkpoints in Hugging Face and Mistral-native format.

    from pixtral_quant.loading import open_checkpoint, load_model, write_native
    ckpt = open_checkpoint("/models/Pixtral-12B-2409")   # format auto-detected; names/shapes checked
    model = load_model(ckpt, dtype=torch.bfloat16)
    write_native(ckpt, "/tmp/pixtral-native")
"""

from .arch import SizeReport, parameter_counts, size_report
from .checkpoint import Checkpoint, check_saved, iter_tensors, load_model, open_checkpoint
from .detect import detect_format, resolve_path
from .names import rope_hf_to_native, rope_native_to_hf
from .params import config_to_params, params_to_config
from .summary import describe
from .write import write_hf, write_native

__all__ = [
    "Checkpoint", "SizeReport", "check_saved", "config_to_params", "describe", "detect_format", "iter_tensors",
    "load_model", "open_checkpoint", "parameter_counts", "params_to_config", "resolve_path", "rope_hf_to_native",
    "rope_native_to_hf", "size_report", "write_hf", "write_native",
]
