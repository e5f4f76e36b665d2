"""SIGHUP's rolling restart of `deepcrl serve --workers 2` under keep-alive load: are requests lost?

The issue's experiment: 8 keep-alive connections in a closed loop (deepcrl.bench.load's raw HTTP/1.1 client, JSON
on /v1/act; a connection the server closes, or answers with ``Connection: close``, is reopened), and SIGHUP sent
`--restarts` times, `--interval-s` apart (each restarts both workers one after the other). Before
`deepcrl.serve.connection`, 14 of 90,902 requests failed this way (resets and broken pipes as old workers closed
idle keep-alive connections). Reported: requests, failures by kind, p50 / p99.

Usage: python benchmarks/serve_sighup.py [--restarts 3] [--interval-s 6]
Writes benchmarks/results/serve_sighup.json.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import sys
import tempfile
import time
from pathlib import Path

import tyro


@dataclasses.dataclass(frozen=True)
class ServeSighupConfig:
    """Closed-loop keep-alive load through rolling restarts."""

    restarts: int = 3
    """SIGHUPs sent."""
    interval_s: float = 6.0
    """Seconds between them (the load runs for restarts x interval + 2 s)."""
    concurrency: int = 8
    """Keep-alive connections."""
    out: Path = Path("benchmarks/results/serve_sighup.json")
    """Result JSON."""


async def _run(url: str, requests: list[bytes], cfg: ServeSighupConfig, pid: int):
    from deepcrl.bench.load import Run, closed_loop, http_connect

    run = Run()

    async def hups() -> None:
        for _ in range(cfg.restarts):
            await asyncio.sleep(cfg.interval_s / 2)
            import os

            os.kill(pid, signal.SIGHUP)
            await asyncio.sleep(cfg.interval_s / 2)

    await asyncio.gather(hups(), closed_loop(lambda: http_connect(url), requests, cfg.concurrency,
                                             cfg.restarts * cfg.interval_s + 2.0, run))
    return run


def main(cfg: ServeSighupConfig) -> int:
    from deepcrl.bench.common import machine_facts, write_result
    from deepcrl.bench.load import http_requests
    from deepcrl.bench.serve import _payloads, _start, _stop
    from deepcrl.bench.synthetic import write_policy

    machine = machine_facts(jax_devices=False)
    with tempfile.TemporaryDirectory() as tmp:
        model = write_policy(Path(tmp) / "policy.onnx", obs_size=29, goal_size=2, action_size=8, hidden=(64, 64))
        proc, url = _start([sys.executable, "-m", "deepcrl.cli", "serve", "--model", str(model), "--port", "0",
                            "--workers", "2"])
        try:
            requests = http_requests(url, "/v1/act", _payloads(29, 2, 0)[0], "application/json", None)
            run = asyncio.run(_run(url, requests, cfg, proc.pid))
        finally:
            _stop(proc)
    stats = run.stats()
    out = {"benchmark": "serve_sighup", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": machine, "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(cfg).items()},
           **stats, "errors_by_kind": stats.get("errors_by_kind", {})}
    write_result(cfg.out, out, jax_devices=False)
    print(f"{stats['requests']} requests through {cfg.restarts} rolling restarts: {stats['errors']} failed "
          f"{stats.get('errors_by_kind', {})}; p50 {stats.get('p50_us')} µs, p99 {stats.get('p99_us')} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(ServeSighupConfig)))
