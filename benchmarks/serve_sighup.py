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
import os
import signal
import sys

import tyro

from deepcrl.bench.serve_script import FreshServerConfig, measure_fresh_server, write_script_result


@dataclasses.dataclass(frozen=True)
class ServeSighupConfig(FreshServerConfig):
    """Closed-loop keep-alive load through rolling restarts (8 connections by default)."""

    restarts: int = 3
    """SIGHUPs sent."""
    interval_s: float = 6.0
    """Seconds between them (the load runs for restarts x interval + 2 s)."""


async def _run(url: str, requests: list[bytes], cfg: ServeSighupConfig, pid: int):
    from deepcrl.bench.load import Run, closed_loop, http_connect

    run = Run()

    async def hups() -> None:
        for _ in range(cfg.restarts):
            await asyncio.sleep(cfg.interval_s / 2)
            os.kill(pid, signal.SIGHUP)
            await asyncio.sleep(cfg.interval_s / 2)

    await asyncio.gather(hups(), closed_loop(lambda: http_connect(url), requests, cfg.concurrency,
                                             cfg.restarts * cfg.interval_s + 2.0, run))
    return run


def main(cfg: ServeSighupConfig) -> int:
    run, machine = measure_fresh_server(lambda url, requests, pid, _: _run(url, requests, cfg, pid), ["--workers", "2"])
    stats = run.stats()
    write_script_result("serve_sighup", cfg, machine, {**stats, "errors_by_kind": stats.get("errors_by_kind", {})})
    print(f"{stats['requests']} requests through {cfg.restarts} rolling restarts: {stats['errors']} failed "
          f"{stats.get('errors_by_kind', {})}; p50 {stats.get('p50_us')} µs, p99 {stats.get('p99_us')} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(ServeSighupConfig)))
