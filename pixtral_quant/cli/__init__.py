"""The `pixtral-quant` command. Each subcommand lives in its own module, parses options and delegates
to the library; no tensor math here. Any PixtralQuantError becomes one message and its exit code; third-party
banners and warnings stay off unless `--verbose` (quiet.py)."""

from __future__ import annotations

from .group import main

__all__ = ["main"]


def _register() -> None:
    from . import inspect as _inspect  # noqa: F401  (each module adds its command to `main`)
    from . import calib as _calib  # noqa: F401
    from . import convert as _convert  # noqa: F401
    from . import plan as _plan  # noqa: F401
    from . import synth as _synth  # noqa: F401
    from . import bench as _bench  # noqa: F401
    from . import validate as _validate  # noqa: F401


_register()
