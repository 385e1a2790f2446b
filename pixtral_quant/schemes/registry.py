"""The scheme registry: scheme config class → handler class. A handler turns one Linear's weight into the tensors
its checkpoint format stores and writes the format's `quantization_config`; or (GGUF) names the exporter that
writes the whole output.
What the rest of the toolkit knows about a scheme (storage format, precision, optional targets, 4-bit sibling,
whether it allocates, transients ...) is not here but on its config: config._SchemeFacts.

Handler interface (duck-typed, see rtn.py / gptq.py / bnb.py / gguf.py):
    name, extra (pip extra or None), needs_calibration, group_size (or None),
    exporter ('checkpoint' | 'mixed' | 'gguf')
    require() -> None                          MissingDependencyError naming the extra
    quantize(name, weight, bias) -> dict       data-free schemes: tensor suffix → tensor
    solver(linear) -> Solver                   calibrated schemes: add_batch(x) then finish() -> (dict, loss)
    quantization_config(plan) -> dict          the config.json entry
"""

from __future__ import annotations

from ..config import SCHEME_CONFIGS, SCHEME_FAMILIES, scheme_choices
from ..errors import UsageError


def _handlers() -> dict[type, type]:
    from ..config import BnbInt8, BnbNf4, Gguf, GptqInt4, GptqInt8, GptqMixed, RtnInt4, RtnInt8
    from .bnb import BnbInt8Handler, BnbNf4Handler
    from .gguf import GgufHandler
    from .gptq import GptqHandler
    from .gptq_mixed import GptqMixedHandler
    from .rtn import RtnHandler

    return {GptqInt4: GptqHandler, GptqInt8: GptqHandler, RtnInt4: RtnHandler, RtnInt8: RtnHandler,
            BnbInt8: BnbInt8Handler, BnbNf4: BnbNf4Handler, Gguf: GgufHandler,
            GptqMixed: GptqMixedHandler}


def handler_for(scheme_config):
    """The handler instance of a scheme config (config.GptqInt4(...) etc.)."""
    handlers = _handlers()
    if type(scheme_config) not in handlers:
        raise UsageError(f"no handler for scheme {scheme_config.name!r}", fix=f"use one of {scheme_choices()}")
    return handlers[type(scheme_config)](scheme_config)


def scheme_names() -> list[str]:
    """The fixed-name (checkpoint) schemes. Every config class, fixed or family, has exactly one handler."""
    classes = set(SCHEME_CONFIGS.values()) | {cls for cls, _ in SCHEME_FAMILIES.values()}
    assert classes == set(_handlers())  # one handler per config, both ways
    return sorted(SCHEME_CONFIGS)
