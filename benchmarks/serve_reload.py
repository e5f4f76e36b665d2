"""Model replacement under load: closed loop at concurrency 16 through 10 explicit loads of a new version.

One `deepcrl serve --model-control explicit` process over a directory holding one synthetic policy; this
process runs 16 keep-alive connections in a closed loop (deepcrl.bench.load's raw HTTP/1.1 client, JSON on
/v1/act) and, every `--interval-s`, writes the next version of the file (beside, then renamed into place) and
calls ``POST /v2/repository/models/policy/load``. Reported: requests, failed requests (any status but 200, any
connection error), p50/p99 of the requests sent while no load was in progress (steady) and of those sent
during a load call or within `--settle-s` after it (during replacements), their ratio (target <= 2), and each
load call's duration. The load generator shares the 2 cores with the server and with the new session's
warm-up, so the ratio is the figure to read.

Usage: python benchmarks/serve_reload.py [--replacements 10] [--concurrency 16]
Writes benchmarks/results/serve_reload.json.
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
        async with httpx.AsyncClient(timeout=120) as client:
            for version in range(2, cfg.replacements + 2):
                begin = time.monotonic()
                tmp = root / f".policy.{version}.tmp"
                await asyncio.to_thread(write_policy, tmp, obs_size=29, goal_size=2, action_size=8,
                                        hidden=cfg.hidden, seed=version)
                os.replace(tmp, root / "policy.onnx")
                t = clock()
                r = await client.post(f"{url}/v2/repository/models/policy/load")
                loads.append((t, clock(), r.status_code))
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
    ok = status == 200
    steady_p99, during_p99 = _pct(lat[steady & ok], 99), _pct(lat[during & ok], 99)
    return {"requests": len(records), "failed": int((~ok).sum()), "failed_by_kind": kinds,
            "seconds": round((clock() - t0) / 1e9, 1),
            "steady": {"requests": int(steady.sum()), "p50_us": _pct(lat[steady & ok], 50), "p99_us": steady_p99},
            "during_replacements": {"requests": int(during.sum()), "p50_us": _pct(lat[during & ok], 50),
                                    "p99_us": during_p99},
            "p99_ratio_during_vs_steady": round(during_p99 / steady_p99, 2) if steady_p99 and during_p99 else None,
            "after_first_replacement_all": {"p99_us": _pct(lat[(sent >= loads[0][0]) & ok], 99)} if loads else {},
            "loads": [{"status": s, "seconds": round((e - b) / 1e9, 3)} for b, e, s in loads]}


def main(cfg: ServeReloadConfig) -> int:
    result, machine = measure_fresh_server(lambda url, requests, _, root: _measure(url, requests, cfg, root),
                                           ["--model-control", "explicit"], hidden=cfg.hidden, seed=1,
                                           model_dir=True)
    path = write_script_result("serve_reload", cfg, machine,
                        {**result, "target": {"failed": 0, "p99_ratio_during_vs_steady_max": 2.0}},
                        shared_machine="2 cores shared by the server, the load generator, the new session's "
                                       "warm-up and other jobs: read the ratio")
    print(f"{result['requests']} requests, {result['failed']} failed {result['failed_by_kind']}; p99 steady "
          f"{result['steady']['p99_us']} µs, during replacements {result['during_replacements']['p99_us']} µs "
          f"(x{result['p99_ratio_during_vs_steady']}); loads {[l['status'] for l in result['loads']]}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(ServeReloadConfig)))
