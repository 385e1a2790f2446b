"""Terminal output of `convert`: rich progress bars (per layer, with ETA) and the final summary table."""

from __future__ import annotations

from ..pipeline.runtime import Reporter


class RichReporter(Reporter):
    """Progress bars on stderr (hidden when stderr is not a terminal, so logs stay clean)."""

    def __init__(self):
        from rich.console import Console

        self.console = Console(stderr=True)
        self.progress = None

    def log(self, message) -> None:
        self.console.print(message)

    def task(self, description: str, total: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.done()
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), console=self.console, transient=True,
                                 disable=not self.console.is_terminal)
        self.progress.start()
        task = self.progress.add_task(description, total=total)
        return lambda: self.progress.advance(task)

    def done(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


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
