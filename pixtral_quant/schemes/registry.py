"""The scheme registry: scheme name → handler class. A handler turns one Linear's weight into the tensors its
checkpoint format stores and writes the format's `quantization_config`.

Handler interface (duck-typed, see rtn.py / gptq.py / bnb.py):
    name, extra (pip extra or None), needs_calibration, group_size (or None)
    require() -> None                          MissingDependencyError naming the extra
    quantize(name, weight, bias) -> dict       data-free schemes: tensor suffix → tensor
    solver(linear) -> Solver                   calibrated schemes: add_batch(x) then finish() -> (dict, loss)
    quantization_config(plan) -> dict          the config.json entry
"""

from __future__ import annotations

from ..config import SCHEME_CONFIGS
from ..errors import UsageError


def _handlers() -> dict[str, type]:
    from .bnb import BnbInt8Handler, BnbNf4Handler
    from .gptq import GptqHandler
    from .rtn import RtnHandler

    return {"gptq-int4": GptqHandler, "gptq-int8": GptqHandler, "rtn-int4": RtnHandler, "rtn-int8": RtnHandler,
            "bnb-int8": BnbInt8Handler, "bnb-nf4": BnbNf4Handler}


def handler_for(scheme_config):
    """The handler instance of a scheme config (config.GptqInt4(...) etc.)."""
    handlers = _handlers()
    if scheme_config.name not in handlers:
        raise UsageError(f"no handler for scheme {scheme_config.name!r}", fix=f"use one of {sorted(handlers)}")
    return handlers[scheme_config.name](scheme_config)


def scheme_names() -> list[str]:
    assert set(SCHEME_CONFIGS) == set(_handlers())  # one handler per config, both ways
    return sorted(SCHEME_CONFIGS)
