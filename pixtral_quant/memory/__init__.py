"""Memory: what a quantized Pixtral needs on disk, on the GPU and on the host, predicted from its config and a
recipe (storage → inventory → checkpoint / budget → changes → report). What measures it (the conversion-RSS
model, the RSS sampler, the process-tree sampler) is pixtral_quant/diagnostics/.

    from pixtral_quant.memory import memory_report
    memory_report("pixtral-12b", "pixtral-12b-int4")["fits"]
"""

from .budget import MemoryPlan, plan_memory, tokens_of
from .changes import CHANGES, propose
from .checkpoint import estimate
from .inventory import inventory, model_shapes
from .report import memory_report
from .runtime import image_tokens, kv_bytes_per_token
from .settings import SHIPPED_TARGETS, Placement, Target, Workload
from .storage import Format, format_for, linear_bytes, linear_tensors
from .units import GIB, fmt_bytes, parse_size

__all__ = ["CHANGES", "Format", "GIB", "MemoryPlan", "Placement", "SHIPPED_TARGETS", "Target", "Workload",
           "estimate", "fmt_bytes", "format_for", "image_tokens", "inventory", "kv_bytes_per_token",
           "linear_bytes", "linear_tensors", "memory_report", "model_shapes", "parse_size", "plan_memory",
           "propose", "tokens_of"]
