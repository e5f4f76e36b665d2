"""Model replacement under load: closed loop at concurrency 16 through 10 explicit loads of a new version.

One `deepcrl serve --model-control explicit` process over a directory holding one synthetic policy; this
process runs 16 keep-alive connections in a closed loop (deepcrl.bench.load's raw HTTP/1.1 client, JSON on
/v1/act) and, every `--interval-s`, writes the next version of the file (beside, then renamed into place) and
calls ``POST /v2/repository/models/policy/load``. Reported: requests, failed requests (any status but 200, any
connection error), p50/p99 of the requests sent while no load was in progress (steady) and of those sent
during a load call or within `--settle-s` after it (during replacements), their ratio (target <= 2), the same
ratio against the requests sent between the loads (a baseline interleaved with them), and each load call's
duration. The load generator shares the 2 cores with the server and with the new session's
warm-up, so the ratio is the figure to read.

With ``--workers N`` the server runs N worker processes; the keep-alive connections stay on the worker that
accepted each, and a load answered by one worker must reach all of them (`deepcrl/serve/control.py`). Right
after each load call returns, `--check-requests` requests on fresh connections record the version that answers
them: ``stale_after_load`` counts those answered by an older version (target 0).

Usage: python benchmarks/serve_reload.py [--replacements 10] [--concurrency 16] [--workers 2]
Writes benchmarks/results/serve_reload.json (serve_reload_workersN.json with --workers N > 1).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import tyro

from deepcrl.bench.serve_script import FreshServerConfig, measure_fresh_server, write_script_result

JSON_HEADERS = {"content-type": "application/json"}


@dataclasses.dataclass(frozen=True)
class ServeReloadConfig(FreshServerConfig):
    """Closed-loop load through repeated model replacements."""

    replacements: int = 10
    """Loads of a new version."""
    concurrency: int = 16
    """Keep-alive connections, each with one request in flight (16, the issue's experiment)."""
    steady_s: float = 3.0
    """Seconds of load before the first replacement."""
    interval_s: float = 1.5
    """Seconds between the starts of two replacements."""
    settle_s: float = 0.2
    """Requests sent this long after a load call returned still count as 'during replacement'."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden sizes of the synthetic policy (student-sized by default)."""
    workers: int = 1
    """Server worker processes (`deepcrl serve --workers`)."""
    check_requests: int = 8
    """Requests on fresh connections right after each load returns, to see which version answers them."""


def _pct(values, q):
    return round(float(np.percentile(values, q)) / 1e3, 1) if len(values) else None


async def _measure(url: str, requests: list[bytes], cfg: ServeReloadConfig, root: Path) -> dict[str, Any]:
    import httpx

    from deepcrl.bench.load import error_kind, http_connect
    from deepcrl.bench.synthetic import write_policy

    clock = time.perf_counter_ns
    records: list[tuple[int, int, int]] = []  # (sent, latency, status)
    kinds: dict[str, int] = {}
    stop = asyncio.Event()
    loads: list[tuple[int, int, int]] = []  # (start, end, status)
    checks: list[tuple[int, int]] = []  # (version just loaded, version that answered a fresh connection)
    body = requests[0].split(b"\r\n\r\n", 1)[1]  # the JSON body of the timed requests

    async def worker(k: int) -> None:
        conn = await http_connect(url)
        i = k
        while not stop.is_set():
            t = clock()
            status, error = 0, None
            try:
                if conn.closed:
                    conn = await http_connect(url)
                status = await conn.roundtrip(requests[i % len(requests)])
            except Exception as exc:  # noqa: BLE001 - counted by kind
                error = exc
                conn.closed = True
            records.append((t, clock() - t, status))
            if status != 200 or error is not None:
                kind = error_kind(status, error)
                kinds[kind] = kinds.get(kind, 0) + 1
            i += 1
        await conn.close()

    async def replacer() -> None:
        await asyncio.sleep(cfg.steady_s)
        # No keep-alive on the checks' client: each check request opens a new connection (any worker may take it).
        async with httpx.AsyncClient(timeout=120) as client, \
                httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) as fresh:
            for version in range(2, cfg.replacements + 2):
                begin = time.monotonic()
                tmp = root / f".policy.{version}.tmp"
                await asyncio.to_thread(write_policy, tmp, obs_size=29, goal_size=2, action_size=8,
                                        hidden=cfg.hidden, seed=version)
                os.replace(tmp, root / "policy.onnx")
                t = clock()
                r = await client.post(f"{url}/v2/repository/models/policy/load")
                loads.append((t, clock(), r.status_code))
                for _ in range(cfg.check_requests):
                    answer = await fresh.post(f"{url}/v1/act", content=body, headers=JSON_HEADERS)
                    checks.append((version, int(answer.headers.get("x-model-version", "0"))))
                await asyncio.sleep(max(0.0, cfg.interval_s - (time.monotonic() - begin)))
        await asyncio.sleep(1.0)
        stop.set()

    t0 = clock()
    await asyncio.gather(replacer(), *(worker(k) for k in range(cfg.concurrency)))
    sent = np.array([r[0] for r in records], np.int64)
    lat = np.array([r[1] for r in records], np.int64)
    status = np.array([r[2] for r in records])
    during = np.zeros(len(records), bool)
    settle = int(cfg.settle_s * 1e9)
    for start, end, _ in loads:
        during |= (sent >= start) & (sent <= end + settle)
    steady = (~during) & (sent < loads[0][0]) if loads else ~during
    # A baseline interleaved with the replacements (neighbours' load drifts less between the two): the requests
    # sent after the first load began, outside every load's window, up to the last one's end.
    between = (~during) & (sent >= loads[0][0]) & (sent <= loads[-1][1]) if loads else ~during
    ok = status == 200
    steady_p99, during_p99 = _pct(lat[steady & ok], 99), _pct(lat[during & ok], 99)
    between_p99 = _pct(lat[between & ok], 99)
    return {"requests": len(records), "failed": int((~ok).sum()), "failed_by_kind": kinds,
            "failed_during_replacements": int((~ok & during).sum()),
            "seconds": round((clock() - t0) / 1e9, 1),
            "steady": {"requests": int(steady.sum()), "p50_us": _pct(lat[steady & ok], 50), "p99_us": steady_p99},
            "during_replacements": {"requests": int(during.sum()), "p50_us": _pct(lat[during & ok], 50),
                                    "p99_us": during_p99},
            "p99_ratio_during_vs_steady": round(during_p99 / steady_p99, 2) if steady_p99 and during_p99 else None,
            "between_replacements": {"requests": int(between.sum()), "p50_us": _pct(lat[between & ok], 50),
                                     "p99_us": between_p99},
            "p99_ratio_during_vs_between": round(during_p99 / between_p99, 2) if between_p99 and during_p99 else None,
            "after_first_replacement_all": {"p99_us": _pct(lat[(sent >= loads[0][0]) & ok], 99)} if loads else {},
            "loads": [{"status": s, "seconds": round((e - b) / 1e9, 3)} for b, e, s in loads],
            "fresh_connection_checks": len(checks), "stale_after_load": sum(got < want for want, got in checks),
            "answered_versions_after_load": sorted({got for _, got in checks})}


def main(cfg: ServeReloadConfig) -> int:
    result, machine = measure_fresh_server(lambda url, requests, _, root: _measure(url, requests, cfg, root),
                                           ["--model-control", "explicit", "--workers", str(cfg.workers)],
                                           hidden=cfg.hidden, seed=1, model_dir=True)
    name = "serve_reload" if cfg.workers == 1 else f"serve_reload_workers{cfg.workers}"
    path = write_script_result(name, cfg, machine,
                        {**result, "target": {"failed": 0, "p99_ratio_during_vs_steady_max": 2.0}},
                        shared_machine="2 cores shared by the server, the load generator, the new session's "
                                       "warm-up and other jobs: read the ratio")
    print(f"{result['requests']} requests, {result['failed']} failed {result['failed_by_kind']}; p99 steady "
          f"{result['steady']['p99_us']} µs, during replacements {result['during_replacements']['p99_us']} µs "
          f"(x{result['p99_ratio_during_vs_steady']}; x{result['p99_ratio_during_vs_between']} vs between them); "
          f"loads {[l['status'] for l in result['loads']]}; "
          f"{result['stale_after_load']} of {result['fresh_connection_checks']} fresh-connection checks answered "
          f"by an older version")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(ServeReloadConfig)))
