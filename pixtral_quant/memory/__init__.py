"""Memory: what a quantized Pixtral needs on disk, on the GPU and on the host, predicted from its config and a
recipe (storage → inventory → checkpoint / budget → changes → report). What measures it (the conversion-RSS
model, the RSS sampler, the process-tree sampler) is pixtral_quant/diagnostics/.

    from pixtral_quant.memory import memory_report
    memory_report("pixtral-12b", "pixtral-12b-int4")["fits"]
"""

# The names below load on first use (PEP 562), not when the package is imported: `pixtral_quant.cli` imports
# memory/units.py at startup, and importing inventory.py there would import torch (and tqdm, through it) before
# cli/quiet.py has set TQDM_DISABLE: compressed-tensors' bars would then print under every quiet command.
_HOME = {
    "MemoryPlan": "budget", "plan_memory": "budget", "tokens_of": "budget",
    "CHANGES": "changes", "propose": "changes",
    "estimate": "checkpoint",
    "inventory": "inventory", "model_shapes": "inventory",
    "memory_report": "report",
    "image_tokens": "runtime", "kv_bytes_per_token": "runtime",
    "SHIPPED_TARGETS": "settings", "Placement": "settings", "Target": "settings", "Workload": "settings",
    "Format": "storage", "format_for": "storage", "linear_bytes": "storage", "linear_tensors": "storage",
    "GIB": "units", "fmt_bytes": "units", "parse_size": "units",
}


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value
    return value


__all__ = ["CHANGES", "Format", "GIB", "MemoryPlan", "Placement", "SHIPPED_TARGETS", "Target", "Workload",
           "estimate", "fmt_bytes", "format_for", "image_tokens", "inventory", "kv_bytes_per_token",
           "linear_bytes", "linear_tensors", "memory_report", "model_shapes", "parse_size", "plan_memory",
           "propose", "tokens_of"]
