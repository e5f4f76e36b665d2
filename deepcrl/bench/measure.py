"""The load generator's accounting: one cell's raw measurements (`Run`), their percentiles, how a request
failed, and the server's CPU time."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import numpy as np


def stats(latencies_ns: list[int] | np.ndarray, seconds: float, errors: int) -> dict[str, Any]:
    """Percentiles (µs), throughput and errors of one cell's latencies (ns)."""
    lat = np.asarray(latencies_ns, np.float64) / 1e3
    if lat.size == 0:
        return {"requests": 0, "errors": errors, "throughput_rps": 0.0}
    p = np.percentile(lat, [50, 90, 99, 99.9])
    return {"requests": int(lat.size), "errors": int(errors), "throughput_rps": round(lat.size / seconds, 1),
            "p50_us": round(p[0], 1), "p90_us": round(p[1], 1), "p99_us": round(p[2], 1),
            "p999_us": round(p[3], 1), "max_us": round(float(lat.max()), 1), "mean_us": round(float(lat.mean()), 1)}


def error_kind(status: int | None, exc: BaseException | None = None) -> str:
    """How a request failed, for the error counts: ``http_<status>``, or the exception's kind."""
    if exc is None:
        return f"http_{status}"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(exc, (ConnectionError, OSError)):
        return "connection"
    return type(exc).__name__


class Run:
    """Raw measurements of one cell, accumulated over interleaved rounds.

    Every request leaves a latency (ns), its status (HTTP status or error frame status; 0 for a failure without
    one) and, for the open loop, its due time and the generator's own lateness in sending it. `errors` counts
    answers other than 200, `error_kinds` by kind (``http_503``, ``http_504``, ``connection``, ``timeout``...).
    """

    def __init__(self):
        self.latencies: list[int] = []
        self.statuses: list[int] = []
        self.due: list[int] = []
        self.lateness: list[int] = []
        self.seconds = 0.0
        self.errors = 0
        self.error_kinds: dict[str, int] = {}
        self.server_cpu: float | None = 0.0
        self.t0 = 0  # open loop: when its first request was due (ns, perf_counter)

    def record(self, latency_ns: int, status: int, exc: BaseException | None = None) -> None:
        self.latencies.append(latency_ns)
        self.statuses.append(status)
        if status != 200 or exc is not None:
            self.errors += 1
            kind = error_kind(status, exc)
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1

    def fail_unanswered(self, kind: str, count: int) -> None:
        """Requests that never got an answer (no latency to record)."""
        if count:
            self.errors += count
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + count

    def add_cpu(self, before: float | None, after: float | None) -> None:
        if self.server_cpu is not None and before is not None and after is not None:
            self.server_cpu += after - before
        else:
            self.server_cpu = None

    def stats(self) -> dict[str, Any]:
        out = stats(self.latencies, self.seconds, self.errors)
        if self.error_kinds:
            out["errors_by_kind"] = dict(sorted(self.error_kinds.items()))
        if self.server_cpu is not None and self.latencies:
            # CPU time the server process spent per answered request: unlike wall-clock figures it barely
            # moves with the other jobs on a shared machine, so its ratio to the baseline is the steady one.
            out["server_cpu_us_per_request"] = round(self.server_cpu / len(self.latencies) * 1e6, 1)
        if self.lateness:
            out["generator_lateness_p50_us"] = round(float(np.percentile(self.lateness, 50)) / 1e3, 1)
            out["generator_lateness_p99_us"] = round(float(np.percentile(self.lateness, 99)) / 1e3, 1)
        return out


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process (Linux /proc; None elsewhere or without a pid)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


async def close_quietly(conn) -> None:
    """Close a connection that may already be broken, ignoring how."""
    try:
        await conn.close()
    except Exception:  # noqa: BLE001 - already broken: nothing more to do with it
        pass
