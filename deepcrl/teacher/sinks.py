"""Where a teacher run's per-iteration records go: metrics.jsonl, curves.png and (optionally) TensorBoard.

A record is one dict per iteration: ``iteration``, ``env_steps``, ``wall_s``, the iteration's mean losses and,
on evaluation iterations, ``eval`` (success, detour_success, ...). Each sink is a callable taking a record, the
same shape as `train`'s ``progress_fn``; a sink that holds a file open also has ``close()``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from deepcrl import artifacts
from deepcrl._io import append_jsonl, read_jsonl, write_text_atomic

METRICS_FILE, CURVES_FILE = artifacts.METRICS, artifacts.CURVES  # the run directory's names (artifacts.py)


def numeric(d: dict) -> dict[str, float]:
    """The int / float entries of `d` (booleans and nested dicts left out)."""
    return {k: v for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class MetricsFile:
    """metrics.jsonl: one JSON line per record. On resume, rows past the checkpoint's step are dropped."""

    def __init__(self, run_dir: Path, keep_up_to_steps: int | None = None):
        self.path = Path(run_dir) / METRICS_FILE
        rows = [] if keep_up_to_steps is None else [r for r in read_jsonl(self.path)
                                                       if r.get("env_steps", 0) <= keep_up_to_steps]
        write_text_atomic(self.path, "".join(_line(r) for r in rows))
        self.history: list[dict] = rows
        """Every record of the run so far (kept rows first)."""

    def __call__(self, record: dict) -> None:
        self.history.append(record)
        append_jsonl(self.path, record)


def _line(record: dict) -> str:
    return json.dumps(record) + "\n"


class Curves:
    """curves.png, redrawn from the whole history on each evaluation record."""

    def __init__(self, run_dir: Path, history: list[dict], title: str = ""):
        self.path = Path(run_dir) / CURVES_FILE
        self.history, self.title = history, title

    def __call__(self, record: dict) -> None:
        from deepcrl.teacher.plots import plot_curves

        if "eval" in record:
            plot_curves(self.history, self.path, title=self.title)


class TensorBoard:
    """TensorBoard event files in the run directory: ``train/<loss>`` every record, ``eval/<metric>`` on
    evaluations, with env steps as the step axis. A resumed run purges the events past its checkpoint."""

    def __init__(self, run_dir: Path, resume_from_steps: int | None = None):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir=str(run_dir), purge_step=resume_from_steps, flush_secs=30)

    def __call__(self, record: dict) -> None:
        step = int(record["env_steps"])
        for name, value in numeric(record).items():
            if name not in ("iteration", "env_steps"):
                self.writer.add_scalar(f"train/{name}", value, step)
        for name, value in numeric(record.get("eval", {})).items():
            self.writer.add_scalar(f"eval/{name}", value, step)

    def close(self) -> None:
        self.writer.close()


def last_eval(history: list[dict]) -> dict:
    """The newest evaluation in a run's metrics rows ({} before the first): a resumed run reports it until it
    evaluates again."""
    return next((r["eval"] for r in reversed(history) if "eval" in r), {})


class RunClock:
    """The host loop's time keeping. ``wall_s`` continues a resumed run's last row; the ``--max-minutes`` budget
    counts from this process's start; the first iteration's time (compile included) is ``compile_s``."""

    def __init__(self, history: list[dict], max_minutes: float | None):
        self._now = time.perf_counter
        self.t_start = self._now()
        self.t0 = self.t_start - (history[-1]["wall_s"] if history else 0.0)
        self.max_minutes, self.compile_s, self._t_it = max_minutes, None, 0.0

    def start_iteration(self) -> None:
        self._t_it = self._now()

    def end_iteration(self) -> None:
        if self.compile_s is None:
            self.compile_s = self._now() - self._t_it

    def wall_s(self) -> float:
        return round(self._now() - self.t0, 3)

    def elapsed_s(self) -> float:
        return self._now() - self.t_start

    def out_of_time(self) -> bool:
        return self.max_minutes is not None and self.elapsed_s() > self.max_minutes * 60
