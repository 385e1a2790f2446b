"""The exceptions users see. Each names what was wrong (file, field, sample) and how to fix it.

The CLI turns any `PixtralQuantError` into one message and its `exit_code`, never a traceback.
Exit codes follow the validate contract: 0 ok, 1 a check failed, 2 bad usage or bad input.
"""

from __future__ import annotations

from pathlib import Path


class PixtralQuantError(Exception):
    """Base class: `where` (a file, field or sample), `message`, and `fix` (what the user should do)."""

    exit_code = 2

    def __init__(self, message: str, *, where: str | Path | None = None, fix: str | None = None):
        self.message = message
        self.where = str(where) if where is not None else None
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        """`where: message` on the first line, then `  fix: ...`; a message that spans lines (a library's
        diagnostic, a list of failed checks) has its further lines indented, so the block reads as one error."""
        head = f"{self.where}: {self.message}" if self.where else self.message
        head = "\n".join(line if i == 0 or line.startswith(" ") else f"  {line}"
                         for i, line in enumerate(head.split("\n")))
        return f"{head}\n  fix: {self.fix}" if self.fix else head


class InputError(PixtralQuantError):
    """A model directory, weight file, tokenizer, config or data file that cannot be used as given."""


class UsageError(PixtralQuantError):
    """Options that contradict each other or name things that do not exist."""


class MissingDependencyError(PixtralQuantError):
    """An optional library is not installed; `fix` names the pip extra."""


class CheckFailed(PixtralQuantError):
    """A measured quantity broke a threshold (validate, plan): exit 1, not a usage error."""

    exit_code = 1


def did_you_mean(name, choices, shown: str = "{}") -> str:
    """'did you mean X? ' for the choice nearest a mistyped name (difflib's ratio ≥ 0.6), else ''; `shown` formats
    the choice ("`pixtral-quant {}`")."""
    import difflib

    found = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
    return f"did you mean {shown.format(found[0])}? " if found else ""


def require(module: str, extra: str):
    """Import an optional dependency lazily, or raise with the pip extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"this needs the optional package '{module}' ({exc})",
            fix=f"pip install 'pixtral-quant[{extra}]'",
        ) from None
