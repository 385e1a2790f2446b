"""The `pixtral-quant` click group: library errors become one message and their exit code, third-party output
stays off while a command runs (quiet.py). The subcommand modules import `main` from here and add themselves to
it; cli/__init__.py imports them (so no command module imports the package that imports it)."""

from __future__ import annotations

import sys

import click

from ..errors import PixtralQuantError, UsageError, did_you_mean
from .quiet import silenced


VERBOSE = ("-v", "--verbose")
INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C


class Group(click.Group):
    """A click group that turns library errors into `error: ...` + exit code, never a traceback, and keeps
    third-party output off while the command runs (unless --verbose, accepted before or after the subcommand)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """`convert ... -v` as `-v convert ...`: the flag belongs to the group, users put it anywhere (before
        a `--`, which ends the options)."""
        end = args.index("--") if "--" in args else len(args)
        flags = [a for a in args[:end] if a in VERBOSE]
        if flags:
            args = ["--verbose"] + [a for a in args[:end] if a not in VERBOSE] + args[end:]
        return super().parse_args(ctx, args)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        """click's lookup, plus the closest command name for a typo (`conver` → convert)."""
        name = args[0] if args else None
        if name is not None and not name.startswith("-") and self.get_command(ctx, name) is None:
            commands = self.list_commands(ctx)
            _exit(UsageError(f"no such command {name!r}", where="pixtral-quant",
                             fix=did_you_mean(name, commands, "`pixtral-quant {}`")
                             + f"commands: {', '.join(commands)}"))
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context):
        try:
            with silenced(ctx.params.get("verbose", False)):
                return super().invoke(ctx)
        except click.UsageError as exc:
            if isinstance(exc, getattr(click.exceptions, "NoArgsIsHelpError", ())):
                raise  # `pixtral-quant calib` alone: click shows the help
            _exit(_from_click(exc))
        except PixtralQuantError as exc:
            _exit(exc)
        except KeyboardInterrupt:  # the command said what it kept (e.g. OUT.partial for --resume); click would
            sys.exit(INTERRUPTED)  # add "Aborted!" and exit 1


def _exit(exc: PixtralQuantError):
    click.echo(f"error: {exc.render()}", err=True)
    sys.exit(exc.exit_code)


def _from_click(exc: click.UsageError) -> UsageError:
    """click's own option errors (a value out of range, not a number, a missing option) in our shape:
    the option as `where`, click's message, and where to look for the accepted values."""
    path = exc.ctx.command_path if exc.ctx else "pixtral-quant"
    param = getattr(exc, "param", None)
    name = param.opts[0] if isinstance(param, click.Option) else param.human_readable_name if param else None
    own = isinstance(exc, click.BadParameter) and not isinstance(exc, click.MissingParameter) and exc.message
    return UsageError(exc.message if own else exc.format_message(), where=name or path,
                      fix=f"see `{path} --help`" + (f" for what {name} accepts" if name else ""))


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pixtral-quant")
@click.option("-v", "--verbose", is_flag=True,
              help="Show the libraries' own output too (GPTQModel banner, torch/transformers warnings).")
def main(verbose: bool) -> None:
    """Quantize Pixtral vision-language models with image-text calibration, and validate the result.

    \b
    Examples:
      pixtral-quant inspect tiny                 # the bundled trained tiny Pixtral
      pixtral-quant inspect pixtral-12b --json   # shipped config-only copy of Pixtral-12B
      pixtral-quant inspect /models/Pixtral-12B-2409
      pixtral-quant convert                      # the tiny model with the default recipe into ./out/
      pixtral-quant validate --candidate out     # check it against the reference (exit 1 when worse)
    """
