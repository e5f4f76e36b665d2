"""Overload: open-loop load at twice the server's measured capacity for 10 s, and what admission control does.

One `deepcrl serve` process (its own GIL and event loop) and this process as the load generator
(deepcrl.bench.load: raw keep-alive HTTP/1.1, JSON bodies on /v1/act, one connection per outstanding request up
to `--max-connections`, as a fleet of robots would hold). In one run:

1. capacity: closed loop at `--capacity-concurrency` connections for `--capacity-s` seconds;
2. for each server setting (admission at `--max-in-flight`, and the same server with the bound lifted, for
   comparison), one open-loop timeline: `--steady-s` at half the capacity, `--overload-s` at `--factor` x the
   capacity, `--after-s` at half again. Latency runs from each request's due time (no coordinated omission).

Reported per phase: offered rate, answered (200), refused (503), deadline (504), other errors by kind, admitted
p50/p99, refusal latency, the generator's own lateness (how late this process started each request: on 2
shared cores the generator and the server compete, so part of every latency is the generator's), and the
recovery time: from the end of the overload to the first 100 ms window after which every window's admitted
p99 stays within 2x the steady p99 (or within 1 ms of it).

Usage: python benchmarks/serve_overload.py [--model policy.onnx] [--max-in-flight 32] [--factor 2]
Writes benchmarks/results/serve_overload.json and .png.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import tyro


@dataclasses.dataclass(frozen=True)
class ServeOverloadConfig:
    """Open loop at a multiple of the measured capacity, with and without admission control."""

    model: Path | None = None
    """The .onnx policy to serve (default: a synthetic 2-layer policy, 64 wide, ant-sized inputs)."""
    max_in_flight: int = 32
    """The server's --max-in-flight for the admission run (below the server's default of 128: at ~2-3k req/s
    on this shared machine, 32 in flight is already ~10 ms of queue)."""
    compare_unbounded: bool = True
    """Also run the same timeline with the bound lifted (--max-in-flight 100000) for comparison."""
    factor: float = 2.0
    """Overload rate as a multiple of the measured closed-loop capacity."""
    capacity_concurrency: int = 16
    """Connections of the closed-loop capacity measurement."""
    capacity_s: float = 3.0
    """Seconds of the capacity measurement."""
    steady_s: float = 3.0
    """Seconds at half the capacity before the overload (the steady p99)."""
    overload_s: float = 10.0
    """Seconds of overload."""
    after_s: float = 5.0
    """Seconds at half the capacity after the overload (recovery)."""
    max_connections: int = 1024
    """Most connections the generator opens (each carries one request at a time)."""
    window_s: float = 0.1
    """Window of the latency timeline and of the recovery rule."""
    out: Path = Path("benchmarks/results/serve_overload.json")
    """Result JSON (the plot goes beside it as .png)."""


def _pct(values, q) -> float | None:
    return round(float(np.percentile(values, q)) / 1e3, 1) if len(values) else None


def _phase(run, start_ns: int, end_ns: int, rate: float) -> dict[str, Any]:
    due = np.asarray(run.due, np.int64)
    lat = np.asarray(run.latencies[:len(due)], np.int64)
    status = np.asarray(run.statuses[:len(due)])
    late = np.asarray(run.lateness[:len(due)], np.int64)
    sel = (due >= start_ns) & (due < end_ns)
    ok, refused = sel & (status == 200), sel & (status == 503)
    kinds: dict[str, int] = {}
    for s in status[sel & (status != 200)]:
        key = f"http_{s}" if s else "connection"
        kinds[key] = kinds.get(key, 0) + 1
    return {"offered_rps": round(rate, 1), "requests": int(sel.sum()), "answered_200": int(ok.sum()),
            "refused_503": int(refused.sum()), "deadline_504": int((sel & (status == 504)).sum()),
            "failures_by_kind": kinds,
            "answered_rps": round(ok.sum() / ((end_ns - start_ns) / 1e9), 1),
            "admitted_p50_us": _pct(lat[ok], 50), "admitted_p99_us": _pct(lat[ok], 99),
            "admitted_p99_from_send_us": _pct((lat - late)[ok], 99),
            "refusal_p50_us": _pct(lat[refused], 50), "refusal_p99_us": _pct(lat[refused], 99),
            "refusal_p99_from_send_us": _pct((lat - late)[refused], 99),
            "generator_lateness_p50_us": _pct(late[sel], 50), "generator_lateness_p99_us": _pct(late[sel], 99)}


def _timeline(run, window_ns: int, end_ns: int) -> list[tuple[float, float | None, int, int]]:
    """(window start s, admitted p99 µs, answered, refused) per window, by due time."""
    due = np.asarray(run.due, np.int64)
    lat = np.asarray(run.latencies[:len(due)], np.int64)
    status = np.asarray(run.statuses[:len(due)])
    out = []
    for w in range(run.t0, end_ns, window_ns):
        sel = (due >= w) & (due < w + window_ns)
        ok = sel & (status == 200)
        out.append(((w - run.t0) / 1e9, _pct(lat[ok], 99), int(ok.sum()), int((sel & (status == 503)).sum())))
    return out


def _recovery_s(timeline, overload_end_s: float, steady_p99_us: float) -> float | None:
    limit = max(2 * steady_p99_us, steady_p99_us + 1000)
    after = [(t, p) for t, p, _, _ in timeline if t >= overload_end_s - 1e-9]
    for k, (t, _) in enumerate(after):
        if all(p is not None and p <= limit for _, p in after[k:]):
            return round(t - overload_end_s, 2)
    return None


async def _timeline_run(url: str, requests: list[bytes], cfg: ServeOverloadConfig, capacity: float):
    from deepcrl.bench.load import Run, http_connect, open_loop

    half, high = 0.5 * capacity, cfg.factor * capacity
    schedule = [(half, cfg.steady_s), (high, cfg.overload_s), (half, cfg.after_s)]
    run = Run()
    await open_loop(lambda: http_connect(url), requests, 0, 0, run, pool=64, max_connections=cfg.max_connections,
                    schedule=schedule)
    t0, s = run.t0, 1_000_000_000
    b1, b2, b3 = (t0 + int(x * s) for x in (cfg.steady_s, cfg.steady_s + cfg.overload_s,
                                             cfg.steady_s + cfg.overload_s + cfg.after_s))
    phases = {"steady": _phase(run, t0, b1, half), "overload": _phase(run, b1, b2, high),
              "after": _phase(run, b2, b3, half)}
    timeline = _timeline(run, int(cfg.window_s * s), b3)
    steady = phases["steady"]["admitted_p99_us"] or 0.0
    return {"phases": phases, "errors_by_kind": run.error_kinds,
            "recovery_s": _recovery_s(timeline, cfg.steady_s + cfg.overload_s, steady),
            "timeline": timeline}


def _metrics(url: str) -> dict[str, float]:
    import httpx

    out = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(("deepcrl_refused_total", "deepcrl_deadline_exceeded_total")):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def main(cfg: ServeOverloadConfig) -> int:
    from deepcrl.bench.common import machine_facts, write_result
    from deepcrl.bench.load import Run, closed_loop, http_connect, http_requests
    from deepcrl.bench.serve import _payloads, _start, _stop
    from deepcrl.bench.synthetic import write_policy

    machine = machine_facts(jax_devices=False)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        model = cfg.model or write_policy(Path(tmp) / "policy.onnx", obs_size=29, goal_size=2, action_size=8,
                                          hidden=(64, 64))
        from deepcrl.export.runtime import OnnxPolicy

        policy = OnnxPolicy(model, providers=["CPUExecutionProvider"])
        json_bodies, _ = _payloads(policy.obs_size, policy.goal_size, 0)
        settings = [("admission", cfg.max_in_flight)] + ([("unbounded", 100_000)] if cfg.compare_unbounded else [])
        results: dict[str, Any] = {}
        capacity = None
        for label, bound in settings:
            proc, url = _start([sys.executable, "-m", "deepcrl.cli", "serve", "--model", str(model), "--port", "0",
                                "--max-in-flight", str(bound)])
            try:
                requests = http_requests(url, "/v1/act", json_bodies, "application/json", None)
                if capacity is None:  # measured once, on the first server, so both timelines offer the same rates
                    run = Run()
                    asyncio.run(closed_loop(lambda: http_connect(url), requests, cfg.capacity_concurrency,
                                            cfg.capacity_s, run, proc.pid))
                    capacity = run.stats()["throughput_rps"]
                    results["capacity"] = {"closed_loop_concurrency": cfg.capacity_concurrency, **run.stats()}
                    print(f"capacity: {capacity:.0f} req/s (closed loop, c={cfg.capacity_concurrency})", flush=True)
                load_before = os.getloadavg()[0]
                cell = asyncio.run(_timeline_run(url, requests, cfg, capacity))
                cell.update(max_in_flight=bound, loadavg_1min_before=round(load_before, 2),
                            loadavg_1min_after=round(os.getloadavg()[0], 2), server_counters=_metrics(url))
                results[label] = cell
                over = cell["phases"]["overload"]
                print(f"{label}: overload {over['offered_rps']:.0f}/s: answered {over['answered_200']}, refused "
                      f"{over['refused_503']}, admitted p99 {over['admitted_p99_us']} µs, refusal p99 "
                      f"{over['refusal_p99_us']} µs, generator lateness p99 {over['generator_lateness_p99_us']} µs, "
                      f"recovery {cell['recovery_s']} s", flush=True)
            finally:
                _stop(proc)
    out = {"benchmark": "serve_overload", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": {**machine, "shared_machine": "2 cores shared by the server, this load generator and other "
                                                    "jobs: see generator_lateness_* for the generator's share"},
           "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(cfg).items()},
           "model": str(cfg.model or "synthetic obs 29, goal 2, action 8, hidden 64x64"),
           **results, "seconds": round(time.monotonic() - started, 1)}
    _plot(out, cfg.out.with_suffix(".png"))
    write_result(cfg.out, out, jax_devices=False)
    print(f"wrote {cfg.out} and {cfg.out.with_suffix('.png')}")
    return 0


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = results["config"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 4.5))
    for label, style in (("admission", "-"), ("unbounded", "--")):
        if label not in results:
            continue
        t, p99, ok, refused = zip(*results[label]["timeline"])
        ax1.plot(t, [p / 1e3 if p is not None else np.nan for p in p99], style, label=f"{label}: admitted p99")
        ax2.plot(t, np.asarray(ok) / cfg["window_s"], style, label=f"{label}: answered 200/s")
        ax2.plot(t, np.asarray(refused) / cfg["window_s"], style, alpha=0.6, label=f"{label}: refused 503/s")
    for ax in (ax1, ax2):
        ax.axvspan(cfg["steady_s"], cfg["steady_s"] + cfg["overload_s"], color="red", alpha=0.08, label="overload")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax1.set(yscale="log", xlabel="time (s, by due time)", ylabel="ms", title="Admitted requests' p99 per 100 ms")
    ax2.set(xlabel="time (s)", ylabel="requests / s", title="Answered and refused")
    fig.suptitle(f"deepcrl serve at {cfg['factor']}x capacity ({results['capacity']['throughput_rps']:.0f} req/s "
                 f"closed loop), {results['machine']['cpu_count']} shared cores", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main(tyro.cli(ServeOverloadConfig)))
