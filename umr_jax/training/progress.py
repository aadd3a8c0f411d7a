"""A progress bar for a training run on stderr: step / total, steps/s, the time left and the last
loss, in the style of `encode`'s and `score`'s bars (rich).

The plain log line (`step 10/52 {...} 3.1 steps/s, ...`, every `train.log_every` steps) is kept
for logs on pods; while the bar is drawn, log records of the root logger's stderr handlers are
printed above it instead of through it.

    bar = TrainingProgress.for_terminal(enabled=not args.no_progress)   # None: not a terminal, not process 0
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from umr_jax.training.speed import format_duration


class TrainingProgress:
    """The bar itself; `start`, `update` after each step, `close`."""

    def __init__(self, console: Any = None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console or Console(stderr=True)
        self.bar = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("{task.fields[left]}"),
                            TextColumn("{task.fields[loss]}"), console=self.console)
        self.task = None
        self._handlers: list[tuple[logging.StreamHandler, Any]] = []

    @classmethod
    def for_terminal(cls, enabled: bool = True) -> "TrainingProgress | None":
        """A bar when `enabled`, stderr is a terminal and this is process 0; else None."""
        import jax

        if not enabled or not sys.stderr.isatty() or jax.process_index() != 0:
            return None
        return cls()

    def start(self, total_steps: int, done_steps: int = 0) -> None:
        """Draw the bar at `done_steps` of `total_steps` (a resumed run starts where it was)."""
        self.bar.start()
        self.task = self.bar.add_task("train", total=total_steps, completed=done_steps, rate="", left="", loss="")
        # The root logger's handlers keep the stderr they were made with; while the bar is drawn,
        # rich's stand-in for sys.stderr prints what they write above it.
        proxy = sys.stderr
        if getattr(proxy, "rich_proxied_file", None) is not None:
            for handler in logging.getLogger().handlers:
                if type(handler) is logging.StreamHandler and handler.stream is proxy.rich_proxied_file:
                    self._handlers.append((handler, handler.setStream(proxy)))

    def update(self, step: int, loss: float | None = None, steps_per_s: float | None = None,
               eta_s: float | None = None) -> None:
        if self.task is None:
            return
        self.bar.update(self.task, completed=step,
                        rate=f"{steps_per_s:.3g} steps/s" if steps_per_s else "",
                        left=f"~{format_duration(eta_s)} left" if eta_s is not None else "",
                        loss=f"loss {loss:.4g}" if loss is not None else "")

    def close(self) -> None:
        if self.task is not None:
            self.bar.stop()
            self.task = None
        for handler, stream in self._handlers:
            handler.setStream(stream)
        self._handlers = []
