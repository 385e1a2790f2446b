"""The progress sink every long step reports to. Its own module, without torch, so that the CLI can build its
reporter (cli/convert_report.py) before any heavy import and bad input is reported in well under 2 s."""

from __future__ import annotations

from collections.abc import Callable


class Reporter:
    """Progress sink. The CLI's shows rich bars (or plain lines without a terminal); this one stays silent."""

    def log(self, message) -> None:
        """A line (or rich renderable) for the user."""

    def task(self, description: str, total: int) -> Callable[[], None]:
        """Start a bar; returns the function that advances it by one."""
        return lambda: None

    def done(self) -> None:
        """Close the current bar."""
