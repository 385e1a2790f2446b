"""The `pixtral-quant` command. Each subcommand lives in its own module, parses options and delegates
to the library; no tensor math here. Any PixtralQuantError becomes one message and its exit code."""

from __future__ import annotations

import sys

import click

from ..errors import PixtralQuantError


class Group(click.Group):
    """A click group that turns library errors into `error: ...` + exit code, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except PixtralQuantError as exc:
            click.echo(f"error: {exc.render()}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pixtral-quant")
def main() -> None:
    """Quantize Pixtral vision-language models with image-text calibration, and validate the result.

    \b
    Examples:
      pixtral-quant inspect tiny                 # the bundled trained tiny Pixtral
      pixtral-quant inspect pixtral-12b --json   # shipped config-only copy of Pixtral-12B
      pixtral-quant inspect /models/Pixtral-12B-2409
      pixtral-quant convert                      # the tiny model with the default recipe into ./out/
      pixtral-quant validate --candidate out     # check it against the reference (exit 1 when worse)
    """


def _register() -> None:
    from . import inspect as _inspect  # noqa: F401  (each module adds its command to `main`)
    from . import calib as _calib  # noqa: F401
    from . import convert as _convert  # noqa: F401
    from . import plan as _plan  # noqa: F401
    from . import synth as _synth  # noqa: F401
    from . import bench as _bench  # noqa: F401
    from . import validate as _validate  # noqa: F401


_register()
