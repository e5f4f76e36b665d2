"""The CLI's progress display: a rich progress bar on a terminal, complete plain lines anywhere else.

Under SLURM, nohup, CI or `| tee`, stdout is not a terminal and a live display would be cut to 80 columns;
there each update becomes one plain line carrying every field, printed at most every ``min_interval_s``
seconds (the last update is always printed), e.g.::

    train 12,800/96,000 env steps | 1,391 env steps/s | critic_loss 4.084 actor_loss 5.798 alpha 0.395 success 0.94

    >>> with Display("train", total=96_000, unit="env steps") as display:  # doctest: +SKIP
    ...     display.update(12_800, critic_loss=4.084, success=0.94)
"""

from __future__ import annotations

import sys
import time
from typing import Union

Field = Union[int, float, str, None]


def format_value(value: Field) -> str:
    """A field's value: integers with thousands separators, floats to 4 significant digits, None as n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4g}"


class Display:
    """Progress of a long run, TTY-aware.

    Args:
        title: what runs ("train", "distill").
        total: the count at completion.
        unit: what is counted ("steps", "env steps").
        min_interval_s: off a terminal, the least seconds between two printed lines.
    """

    def __init__(self, title: str, total: int, unit: str = "steps", min_interval_s: float = 10.0):
        self.title, self.total, self.unit, self.min_interval_s = title, int(total), unit, min_interval_s
        self.tty = sys.stdout.isatty()
        self._origin: tuple[float, int] | None = None  # (time, count) of the first update: rates skip compiling
        self._printed_at: float | None = None
        self._pending: str | None = None
        self._progress = None

    def __enter__(self) -> "Display":
        if self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn(f"[bold]{self.title}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TextColumn("{task.description}"))
            self._progress.__enter__()
            self._task = self._progress.add_task("starting...", total=self.total)
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
        elif self._pending is not None:
            self._print(self._pending)

    def update(self, completed: int, **fields: Field) -> None:
        """Show `completed` out of `total` with `fields` (name -> number or text), in the order given."""
        now = time.perf_counter()
        if self._origin is None:
            self._origin = (now, completed)
        t_origin, c_origin = self._origin
        rate = (completed - c_origin) / (now - t_origin) if now > t_origin and completed > c_origin else None
        parts = [f"{rate:,.0f} {self.unit}/s"] if rate is not None else []
        if fields:
            parts.append(" ".join(f"{name} {format_value(value)}" for name, value in fields.items()))
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, description=" | ".join(parts))
            return
        line = " | ".join([f"{self.title} {completed:,}/{self.total:,} {self.unit}", *parts])
        if completed >= self.total or self._printed_at is None or now - self._printed_at >= self.min_interval_s:
            self._print(line)
        else:
            self._pending = line

    def _print(self, line: str) -> None:
        print(line, flush=True)
        self._printed_at = time.perf_counter()
        self._pending = None
