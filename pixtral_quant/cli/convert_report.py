"""Terminal output of `convert`: rich progress bars (per layer, with ETA) and the final summary table."""

from __future__ import annotations

from ..pipeline.reporter import Reporter


class RichReporter(Reporter):
    """Progress on stderr: rich bars on a terminal; plain lines with counts and ETA elsewhere (CI logs, nohup:
    PlainLines), so that a long run never looks hung. Results go to stdout (the commands print them)."""

    def __init__(self):
        from rich.console import Console

        self.console = Console(stderr=True)
        self.progress = None

    def log(self, message) -> None:
        self.console.print(message)

    def task(self, description: str, total: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.done()
        if not self.console.is_terminal:
            self.progress = PlainLines(self.console, description, total)
            return self.progress.advance
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), console=self.console, transient=True)
        self.progress.start()
        task = self.progress.add_task(description, total=total)
        return lambda: self.progress.advance(task)

    def done(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class PlainLines:
    """One step's progress as plain lines: `layer 3/40: 96/96 in 12.3 s` when it ends, and `layer 3/40: 40/96,
    5.1 s, ETA 7.1 s` at most every config.PROGRESS_EVERY_S seconds inside it."""

    def __init__(self, console, description: str, total: int, every: float | None = None, clock=None):
        import time

        from ..config import PROGRESS_EVERY_S

        self.console, self.description, self.total = console, description, total
        self.every, self.clock = PROGRESS_EVERY_S if every is None else every, clock or time.monotonic
        self.start = self.last = self.clock()
        self.done_count = 0

    def advance(self) -> None:
        self.done_count += 1
        now = self.clock()
        if self.done_count >= self.total:
            self.console.print(f"{self.description}: {self.done_count}/{self.total} in {now - self.start:.1f} s",
                               highlight=False, soft_wrap=True)
        elif now - self.last >= self.every:
            eta = (now - self.start) / self.done_count * (self.total - self.done_count)
            self.console.print(f"{self.description}: {self.done_count}/{self.total}, {now - self.start:.1f} s, "
                               f"ETA {eta:.1f} s", highlight=False, soft_wrap=True)
        else:
            return
        self.last = now

    def stop(self) -> None:
        """Nothing to tear down (rich's Progress has; the reporter calls stop on either)."""


def summary(result, recipe):
    """A rich Table: output, scheme, Linears quantized, size before/after, time, per-layer loss range."""
    from rich.table import Table

    from ..memory.units import file_bytes

    table = Table("", "", title="convert: done", show_header=False)
    table.add_row("output", str(result.out))
    table.add_row("scheme", recipe.scheme.name)
    table.add_row("Linears quantized", f"{len(result.plan.quantized())} of {len(result.plan.entries)}")
    table.add_row("weights before → after", f"{file_bytes(result.bytes_before)} → {file_bytes(result.bytes_after)}")
    limit = recipe.thresholds.max_size_gb
    if limit is not None:
        table.add_row("size target", f"≤ {limit} GB: {'met' if result.bytes_after <= limit * 1e9 else 'MISSED'}")
    table.add_row("time", f"{result.seconds:.1f} s")
    if result.layer_loss:
        losses = result.layer_loss.values()
        table.add_row("GPTQ loss per Linear (layer by layer)", f"{min(losses):.3g} … {max(losses):.3g}")
    if result.stats is not None:
        table.add_row("calibration", f"{len(result.stats.tokens)} samples, {sum(result.stats.tokens)} tokens, "
                                     f"{sum(result.stats.vision_images)} images through the vision tower")
    return table


def result_dict(result) -> dict:
    """`convert --json`: what the summary table shows, as numbers."""
    losses = list(result.layer_loss.values())
    stats = result.stats
    return {"out": str(result.out), "recipe": result.recipe.name, "scheme": result.recipe.scheme.name,
            "linears_quantized": len(result.plan.quantized()), "linears": len(result.plan.entries),
            "bytes_before": result.bytes_before, "bytes_after": result.bytes_after, "seconds": result.seconds,
            "gptq_loss_range": [min(losses), max(losses)] if losses else None,
            "calibration": None if stats is None else {
                "samples": len(stats.tokens), "tokens": sum(stats.tokens), "images": sum(stats.vision_images),
                "content_hash": result.calibration_hash}}
