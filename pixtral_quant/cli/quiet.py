"""Third-party output off for the CLI unless `--verbose`: GPTQModel's banner and GIL warning, torch's and
bitsandbytes' logged warnings, transformers' warnings and weight-loading bars, Python warnings from libraries.

Everything here must be in place before the heavy libraries are imported (they read their environment and log
at import time), and undone on exit so that an in-process caller (tests through click's CliRunner) gets its
interpreter back as it was. The markers these libraries print are listed in tests/test_quiet.py.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import io
import logging
import os
import sys
import warnings
from collections.abc import Iterator

# Read by the libraries at import time; each one only where logging.disable cannot reach.
ENV = {
    "GPTQMODEL_DISABLE_GIL_WARNING": "1",  # gptqmodel/utils/__init__.py: the "Python GIL is enabled" warning
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' "Loading weights" tqdm bar (not a logging call)
    "TRANSFORMERS_VERBOSITY": "error",  # transformers resets its own logger level from this at import
    "TQDM_DISABLE": "1",  # compressed-tensors' "Compressing/Decompressing model" bars (tqdm reads it at import)
}


@contextlib.contextmanager
def silenced(verbose: bool) -> Iterator[None]:
    """Run the body with third-party logging (≤ WARNING), library warnings and progress bars off; a no-op
    when `verbose`. Our own output (rich tables, `error: ...`) never goes through logging or warnings."""
    if verbose:
        yield
        return
    saved_env = {k: os.environ.get(k) for k in ENV}
    saved_disable = logging.root.manager.disable
    hook = _SilentLogBar()
    os.environ.update({k: v for k, v in ENV.items() if saved_env[k] is None})
    logging.disable(logging.WARNING)  # every library logger, LogBar's banner included (it checks isEnabledFor)
    sys.meta_path.insert(0, hook)
    bars = _progress_bars_off()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore")
            warnings.filterwarnings("default", module=r"pixtral_quant(\.|$)")
            yield
    finally:
        if bars is not None:
            bars()
        sys.meta_path.remove(hook)
        logging.disable(saved_disable)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)


def _progress_bars_off():
    """Turn transformers' bars off when it is already imported (in-process callers; a fresh process gets
    HF_HUB_DISABLE_PROGRESS_BARS). Returns the undo, or None."""
    tlog = sys.modules.get("transformers.utils.logging")
    if tlog is None or not tlog.is_progress_bar_enabled():
        return None
    tlog.disable_progress_bar()
    return tlog.enable_progress_bar


MODULE = "logbar.logbar"


class _SilentLogBar(importlib.abc.MetaPathFinder):
    """GPTQModel logs through LogBar, whose shared logger prints a blank line to stdout when it is created
    (LogBar.shared, first called while the `logbar` package imports), before any level applies. This finder
    lets `logbar.logbar` import normally, then creates that logger once with stdout swallowed. Written by hand:
    neither GPTQModel nor LogBar has a switch for it."""

    def find_spec(self, name, path=None, target=None):
        if name != MODULE:
            return None
        sys.meta_path.remove(self)  # find the real spec (and never recurse)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        exec_module = spec.loader.exec_module

        def exec_then_create(module):
            exec_module(module)
            with contextlib.redirect_stdout(io.StringIO()):
                module.LogBar.shared()

        spec.loader.exec_module = exec_then_create
        return spec
