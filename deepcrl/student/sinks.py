"""Where a distillation run's records go: metrics.jsonl (one line per chunk of gradient steps, plus one
``round_summary`` line per round) and the caller's ``progress_fn``; curves.png is drawn once at the end."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from deepcrl.artifacts import METRICS as METRICS_FILE


class Sinks:
    """metrics.jsonl (truncated when the run starts) and an optional ``progress_fn(record)``."""

    def __init__(self, out: Path, progress_fn: Callable[[dict], None] | None = None):
        self.file = open(Path(out) / METRICS_FILE, "w")
        self.progress_fn = progress_fn
        self.records: list[dict] = []
        """Every chunk's record so far."""
        self.rounds: list[dict] = []
        """Every round's summary so far."""

    def record(self, record: dict) -> None:
        self.records.append(record)
        self._write(record)
        if self.progress_fn is not None:
            self.progress_fn(dict(record))

    def round_summary(self, summary: dict) -> None:
        self.rounds.append(summary)
        self._write({"round_summary": summary})

    def _write(self, row: dict) -> None:
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()
