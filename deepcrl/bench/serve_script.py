"""What the `benchmarks/serve_*.py` scripts that load a fresh `deepcrl serve` share: a synthetic policy in a
temporary folder, the server process on it, pre-encoded JSON /v1/act requests, and the result's header.

A script passes its measurement coroutine and its config; this module owns the process's life (started,
measured, stopped whatever happens) and the time/machine/config fields every result JSON starts with.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

from deepcrl.bench.common import machine_facts, write_result
from deepcrl.bench.load import http_requests
from deepcrl.bench.serve import _payloads, _start, _stop
from deepcrl.bench.synthetic import write_policy

T = TypeVar("T")
OBS_SIZE, GOAL_SIZE, ACTION_SIZE = 29, 2, 8  # the ant maze's sizes


@dataclasses.dataclass(frozen=True)
class FreshServerConfig:
    """What every script that loads a fresh `deepcrl serve` takes (a script's config adds its own fields)."""

    concurrency: int = 8
    """Keep-alive connections, each with one request in flight."""
    out: Path | None = None
    """Result JSON (default: benchmarks/results/<the benchmark's name>.json)."""


def measure_fresh_server(measure: Callable[[str, list[bytes], int, Path], Awaitable[T]], serve_args: list[str],
                         hidden: tuple[int, ...] = (64, 64), seed: int = 0,
                         model_dir: bool = False) -> tuple[T, dict[str, Any]]:
    """Write a synthetic policy in a temporary folder, start ``deepcrl serve --port 0`` on it (on the folder
    with `model_dir`, on the file otherwise) plus `serve_args`, and return
    ``asyncio.run(measure(url, requests, server_pid, folder))`` with the machine's facts taken before it
    started; the server is stopped whatever happens."""
    machine = machine_facts(jax_devices=False)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = write_policy(root / "policy.onnx", obs_size=OBS_SIZE, goal_size=GOAL_SIZE, action_size=ACTION_SIZE,
                             hidden=hidden, seed=seed)
        proc, url = _start([sys.executable, "-m", "deepcrl.cli", "serve", "--model", str(root if model_dir else model),
                            "--port", "0", *serve_args])
        try:
            requests = http_requests(url, "/v1/act", _payloads(OBS_SIZE, GOAL_SIZE, 0)[0], "application/json", None)
            return asyncio.run(measure(url, requests, proc.pid, root)), machine
        finally:
            _stop(proc)


def write_script_result(name: str, cfg: FreshServerConfig, machine: dict[str, Any], body: dict[str, Any],
                        shared_machine: str | None = None) -> Path:
    """Write ``{benchmark, time, machine, config, **body}`` to `cfg.out` (default benchmarks/results/NAME.json),
    with `shared_machine` as a note on how to read the figures on a shared machine; returns the file's path."""
    if shared_machine:
        machine = {**machine, "shared_machine": shared_machine}
    out = {"benchmark": name, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine,
           "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()},
           **body}
    return write_result(cfg.out or Path(f"benchmarks/results/{name}.json"), out, jax_devices=False)
