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
p99 stays normal (within 2x the steady p99, 1 ms of it, or the steady phase's worst window).

Two load generators. `--generator python` is deepcrl.bench.load in this process, on the server's cores: on a small
machine it cannot offer twice the capacity (Dec 4, 2 cores: 2-4 s late at p99), so most of what it measures is
its own lateness. `--generator h2load` (the default when `h2load` is on PATH: `apt install nghttp2-client`) is
nghttp2's C++ client, run as a fleet of `--fleet-connections` keep-alive robots, each sending at an equal share
of the offered rate (`--rps`): one h2load at half the capacity for the whole timeline, and a second one whose
robots add the rest during the overload (the overload begins with their first request). Each h2load connects
one robot per millisecond, so that the robots' phases spread over their period, as independent robots' would
(`_stagger`). With `--pin` the server gets the first core and the generators the others, as robots on their own
machines would. h2load logs each request's start and duration; it has no notion of a due time, so a robot
whose answer is late sends its next request late (its shortfall is reported as `sent_rps` against
`offered_rps`).

**The floor** (`--floor`, h2load only): the same fleet and timeline against `deepcrl.bench.floor`, a server that
answers every request with the same bytes and does nothing else, pinned like the server. What h2load measures
there is the generator's own lateness, the kernel's loopback and the machine's scheduling: the part of every
latency above that no server could remove.

Usage: python benchmarks/serve_overload.py [--model policy.onnx] [--max-in-flight 32] [--factor 2]
Writes benchmarks/results/serve_overload.json and .png.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tyro


@dataclasses.dataclass(frozen=True)
class ServeOverloadConfig:
    """Open loop at a multiple of the measured capacity, with and without admission control."""

    model: Path | None = None
    """The .onnx policy to serve (default: a synthetic 2-layer policy, 64 wide, ant-sized inputs)."""
    max_in_flight: int = 128
    """The server's --max-in-flight for the admission run (the server's default). While a queue stands the
    server tightens it to 1/8 (`deepcrl.serve.admission.Admission`); measured Dec 4 with fixed bounds
    instead (no shedding), at twice the capacity: admitted p99 10.9 ms at 16, 15.6 ms at 32, but a bound of 16
    refused 2-30% of a bursty fleet at half the capacity."""
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
    """python generator: most connections it opens (each carries one request at a time)."""
    generator: Literal["auto", "h2load", "python"] = "auto"
    """Load generator (see the module's docstring); auto: h2load when it is on PATH, else python."""
    fleet_connections: int = 400
    """h2load: robots (keep-alive connections), each sending at an equal share of the offered rate."""
    pin: bool = True
    """With more cores than `--workers`: the server on the first `--workers` cores, the h2load generators on the
    others."""
    workers: int = 1
    """The server's --workers (processes on one port; --max-in-flight is per process). On a many-core machine:
    `--workers 4`."""
    floor: bool = True
    """h2load: also run the timeline against a server that answers without doing anything
    (`deepcrl.bench.floor`): how much of each latency is the generator's, the kernel's and the machine's."""
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


def _recovery_s(timeline, steady_end_s: float, overload_end_s: float, steady_p99_us: float) -> float | None:
    """Seconds from the end of the overload to the first window after which every window's admitted p99 is
    normal: within 2x the steady phase's p99, 1 ms of it, or the worst window of the steady phase itself (a
    100 ms window's p99 is its 5th-slowest answer at 5k req/s: one scheduling hiccup of the machine sets it)."""
    worst = max((p for t, p, _, _ in timeline if t < steady_end_s and p is not None), default=0.0)
    limit = max(2 * steady_p99_us, steady_p99_us + 1000, worst)
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
            "recovery_s": _recovery_s(timeline, cfg.steady_s, cfg.steady_s + cfg.overload_s, steady),
            "timeline": timeline}


_SUMMARY = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                      r"(\d+) errored, (\d+) timeout")


def _cpus(pin: bool, server_cores: int = 1) -> tuple[list[str], list[str]]:
    """(server prefix, generator prefix): taskset pins when asked for and possible (the server on the first
    `server_cores` cores, the generators on the rest), else nothing."""
    n = os.cpu_count() or 1
    if not pin or n <= server_cores or shutil.which("taskset") is None:
        return [], []
    return ["taskset", "-c", f"0-{server_cores - 1}"], ["taskset", "-c", f"{server_cores}-{n - 1}"]


def _h2load(url: str, body: Path, prefix: list[str], *, clients: int, seconds: float | None = None,
            rps: float | None = None, requests: int | None = None, log: Path | None = None) -> subprocess.Popen:
    """h2load over HTTP/1.1 keep-alive: `clients` connections for `seconds` (closed loop), or, with `rps`, each
    client at `rps` requests per second for `requests` in all, the clients started `_stagger` apart."""
    cmd = [*prefix, "h2load", "--h1", "-c", str(clients), "-d", str(body), "-H", "content-type: application/json"]
    if rps is None:
        cmd += ["-D", f"{seconds:g}"]
    else:
        cmd += ["--rps", f"{rps:.6g}", "-n", str(requests), *_stagger(clients * rps)]
    if log is not None:
        cmd += ["--log-file", str(log)]
    return subprocess.Popen([*cmd, url + "/v1/act"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _stagger(rate: float) -> list[str]:
    """h2load's options that connect its clients one per millisecond. Every client of one h2load starts its
    `--rps` timer when it connects, so clients that connect together send together, every period, for the whole
    run (measured Dec 4, 2 cores: 25 robots per h2load process made a lone 2x64 model's p50 3.0 ms at 250 req/s,
    against 0.34 ms for robots on their own). One per millisecond spreads their phases over the period, and opens
    a fleet the way it ramps up rather than as a storm of connections (300 fresh connections at once cost the
    server ~80 ms of CPU on their own, Dec 4). `--rate-period` counts whole milliseconds."""
    return ["-r", "1", "--rate-period", "1ms"]


def _h2load_capacity(url: str, body: Path, prefix: list[str], cfg: ServeOverloadConfig) -> dict[str, Any]:
    out = _h2load(url, body, prefix, clients=cfg.capacity_concurrency, seconds=cfg.capacity_s)
    text = out.communicate()[0]
    took, summary = re.search(r"finished in ([\d.]+)s", text), _SUMMARY.search(text)
    if took is None or summary is None:
        raise SystemExit(f"h2load did not report its requests: {text[-400:]}")
    return {"closed_loop_concurrency": cfg.capacity_concurrency, "generator": "h2load",
            "throughput_rps": round(int(summary.group(4)) / float(took.group(1)), 1),  # answered 200s only
            "summary": summary.group(0)}


def _h2load_fleet(url: str, body: Path, prefix: list[str], *, clients: int, rate: float, seconds: float,
                  log: Path) -> tuple[subprocess.Popen, Path]:
    """`clients` robots sending `rate` requests per second in all for `seconds`, their phases spread evenly."""
    log.unlink(missing_ok=True)
    return _h2load(url, body, prefix, clients=clients, rps=rate / clients, requests=max(clients, round(rate * seconds)),
                   log=log), log


def _h2load_timeline(url: str, body: Path, prefix: list[str], cfg: ServeOverloadConfig, capacity: float,
                     tmp: Path) -> dict[str, Any]:
    """Half the capacity from `base` robots for the whole timeline; `extra` robots add the rest during the
    overload; every robot sends at the same rate. Phases and windows by each request's start time."""
    half, high = 0.5 * capacity, cfg.factor * capacity
    base_n = max(1, round(cfg.fleet_connections * 0.5 / cfg.factor))
    extra_n = max(1, cfg.fleet_connections - base_n)
    total_s = cfg.steady_s + cfg.overload_s + cfg.after_s
    began = time.monotonic()
    base = [_h2load_fleet(url, body, prefix, clients=base_n, rate=half, seconds=total_s, log=tmp / "base.log")]
    time.sleep(max(0.0, cfg.steady_s - (time.monotonic() - began)))
    extra = [_h2load_fleet(url, body, prefix, clients=extra_n, rate=high - half, seconds=cfg.overload_s,
                           log=tmp / "extra.log")]
    texts = [proc.communicate()[0] for proc, _ in base + extra]
    logs = [log for _, log in base + extra]
    tables = {log: np.loadtxt(log, dtype=np.int64, ndmin=2) for log in logs if log.stat().st_size}
    rows = np.concatenate(list(tables.values()))
    start_us, status, dur_us = rows[:, 0], rows[:, 1], rows[:, 2]
    t0 = int(min(tables[log][:, 0].min() for _, log in base if log in tables))
    t = (start_us - t0) / 1e6
    # the overload begins with the extra robots' first request (the two h2load processes start apart)
    onset = (int(tables[extra[0][1]][:, 0].min()) - t0) / 1e6 if extra[0][1] in tables else cfg.steady_s
    bounds = [(0.0, onset, half), (onset, onset + cfg.overload_s, high), (onset + cfg.overload_s, total_s, half)]
    phases = {}
    for name, (a, b, rate) in zip(("steady", "overload", "after"), bounds):
        sel = (t >= a) & (t < b)
        ok, refused = sel & (status == 200), sel & (status == 503)
        kinds: dict[str, int] = {}
        for code in status[sel & (status != 200)]:
            kinds[f"http_{code}"] = kinds.get(f"http_{code}", 0) + 1
        phases[name] = {"offered_rps": round(rate, 1), "sent_rps": round(sel.sum() / (b - a), 1),
                        "requests": int(sel.sum()), "answered_200": int(ok.sum()), "refused_503": int(refused.sum()),
                        "deadline_504": int((sel & (status == 504)).sum()), "failures_by_kind": kinds,
                        "answered_rps": round(ok.sum() / (b - a), 1),
                        "admitted_p50_us": _pct(dur_us[ok] * 1e3, 50), "admitted_p99_us": _pct(dur_us[ok] * 1e3, 99),
                        "refusal_p50_us": _pct(dur_us[refused] * 1e3, 50),
                        "refusal_p99_us": _pct(dur_us[refused] * 1e3, 99)}
    # the overload after its onset: until the server sheds (one late answer, or a window of 20 ms in which a
    # queue stood), requests wait in the queue built at the full bound
    settled = (t >= onset + 0.5) & (t < onset + cfg.overload_s) & (status == 200)
    phases["overload"]["admitted_p99_after_first_0.5s_us"] = _pct(dur_us[settled] * 1e3, 99)
    timeline = []
    for w in np.arange(0.0, total_s, cfg.window_s):
        sel = (t >= w) & (t < w + cfg.window_s)
        ok = sel & (status == 200)
        timeline.append((round(float(w), 3), _pct(dur_us[ok] * 1e3, 99), int(ok.sum()),
                         int((sel & (status == 503)).sum())))
    steady = phases["steady"]["admitted_p99_us"] or 0.0
    summaries = [m.group(0) for text in texts if (m := _SUMMARY.search(text))]
    return {"phases": phases, "generator": "h2load", "robots": {"base": base_n, "extra": extra_n,
                                                                 "rps_each": round(half / base_n, 2)},
            "h2load_summaries": summaries,
            "overload_began_s": round(onset, 3),
            "recovery_s": _recovery_s(timeline, onset, onset + cfg.overload_s, steady), "timeline": timeline}


def _metrics(url: str) -> dict[str, float]:
    import httpx

    out = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(("deepcrl_refused_total", "deepcrl_deadline_exceeded_total", "deepcrl_sheds_total",
                            "deepcrl_in_flight_limit ")):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def main(cfg: ServeOverloadConfig) -> int:
    from deepcrl.bench.common import machine_facts, write_result
    from deepcrl.bench.load import Run, closed_loop, http_connect, http_requests
    from deepcrl.bench.serve import _payloads, _start, _stop
    from deepcrl.bench.synthetic import write_policy

    generator = cfg.generator
    if generator == "auto":
        generator = "h2load" if shutil.which("h2load") else "python"
    if generator == "h2load" and shutil.which("h2load") is None:
        raise SystemExit("--generator h2load needs nghttp2's h2load on PATH (apt install nghttp2-client).")
    if cfg.workers < 1:
        raise SystemExit(f"--workers must be at least 1, got {cfg.workers}.")
    server_cpus, generator_cpus = _cpus(cfg.pin, cfg.workers) if generator == "h2load" else ([], [])
    machine = machine_facts(jax_devices=False)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = cfg.model or write_policy(tmp / "policy.onnx", obs_size=29, goal_size=2, action_size=8,
                                          hidden=(64, 64))
        from deepcrl.export.runtime import OnnxPolicy

        policy = OnnxPolicy(model, providers=["CPUExecutionProvider"])
        json_bodies, _ = _payloads(policy.obs_size, policy.goal_size, 0)
        body = tmp / "body.json"
        body.write_bytes(json_bodies[0])
        # The capacity is measured on the first server: the unbounded one when it runs, so that no refusal
        # of the admission bound is mistaken for (or takes from) the capacity.
        settings = ([("unbounded", 100_000)] if cfg.compare_unbounded else []) + [("admission", cfg.max_in_flight)]
        if not cfg.compare_unbounded and cfg.max_in_flight < cfg.capacity_concurrency:
            raise SystemExit(f"--max-in-flight {cfg.max_in_flight} is below --capacity-concurrency "
                             f"{cfg.capacity_concurrency}: the capacity would be measured through refusals; "
                             "keep --compare-unbounded or lower --capacity-concurrency.")
        results: dict[str, Any] = {}
        capacity = None
        for label, bound in settings:
            proc, url = _start([*server_cpus, sys.executable, "-m", "deepcrl.cli", "serve", "--model", str(model),
                                "--port", "0", "--max-in-flight", str(bound),
                                *(["--workers", str(cfg.workers)] if cfg.workers > 1 else [])])
            try:
                requests = http_requests(url, "/v1/act", json_bodies, "application/json", None)
                if capacity is None:  # measured once, so both timelines offer the same rates
                    if generator == "h2load":
                        results["capacity"] = _h2load_capacity(url, body, generator_cpus, cfg)
                    else:
                        run = Run()
                        asyncio.run(closed_loop(lambda: http_connect(url), requests, cfg.capacity_concurrency,
                                                cfg.capacity_s, run, proc.pid))
                        results["capacity"] = {"closed_loop_concurrency": cfg.capacity_concurrency, **run.stats()}
                    capacity = results["capacity"]["throughput_rps"]
                    print(f"capacity: {capacity:.0f} req/s (closed loop, c={cfg.capacity_concurrency}, {generator})",
                          flush=True)
                load_before = os.getloadavg()[0]
                if generator == "h2load":
                    cell = _h2load_timeline(url, body, generator_cpus, cfg, capacity, tmp)
                else:
                    cell = asyncio.run(_timeline_run(url, requests, cfg, capacity))
                cell.update(max_in_flight=bound, loadavg_1min_before=round(load_before, 2),
                            loadavg_1min_after=round(os.getloadavg()[0], 2), server_counters=_metrics(url))
                results[label] = cell
                over = cell["phases"]["overload"]
                print(f"{label}: overload {over['offered_rps']:.0f}/s: answered {over['answered_200']}, refused "
                      f"{over['refused_503']}, admitted p50/p99 {over['admitted_p50_us']}/{over['admitted_p99_us']} "
                      f"µs, refusal p50/p99 {over['refusal_p50_us']}/{over['refusal_p99_us']} µs, recovery "
                      f"{cell['recovery_s']} s", flush=True)
            finally:
                _stop(proc)
        if generator == "h2load" and cfg.floor:
            # The same fleet and timeline against a server that does nothing (deepcrl.bench.floor), pinned alike:
            # the generator's own lateness plus the kernel's and the machine's share of every latency above.
            proc, url = _start([*server_cpus, sys.executable, "-m", "deepcrl.bench.floor", "0"])
            try:
                cell = _h2load_timeline(url, body, generator_cpus, cfg, capacity, tmp)
            finally:
                _stop(proc)
            results["floor"] = cell
            over = cell["phases"]["overload"]
            print(f"floor (a server that does nothing): at {over['offered_rps']:.0f}/s p50/p99 "
                  f"{over['admitted_p50_us']}/{over['admitted_p99_us']} µs", flush=True)
    out = {"benchmark": "serve_overload", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": {**machine, "generator": generator, "server_cpus": " ".join(server_cpus) or "any",
                       "generator_cpus": " ".join(generator_cpus) or "any (this process)",
                       "shared_machine": "the server and the load generator share this machine"},
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
    for label, style in (("admission", "-"), ("unbounded", "--"), ("floor", ":")):
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
