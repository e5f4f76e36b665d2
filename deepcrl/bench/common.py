"""What every benchmark shares: the machine's facts, a median timer and writing a result JSON.

Every result file records where it was measured (platform, cores, load, library versions, devices), so a
reader can tell a quiet-machine figure from a shared-machine one; ratios measured in one run are what to compare.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from deepcrl._io import write_json_atomic

# Libraries whose versions a benchmark reports (those not installed are listed as None).
VERSIONED = ("deepcrl", "jax", "jaxlib", "flax", "optax", "brax", "mujoco", "mujoco-mjx", "orbax-checkpoint",
             "onnx", "onnxruntime", "onnxruntime-gpu", "jax2onnx", "fastapi", "uvicorn", "uvloop", "httptools",
             "websockets", "httpx", "msgpack", "orjson", "numpy", "pydantic", "prometheus-client")


def versions(names: Iterable[str] = VERSIONED) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine_facts(jax_devices: bool = True) -> dict[str, Any]:
    """Platform, processor, cores, load average, library versions and (when JAX is wanted) its devices."""
    facts: dict[str, Any] = {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(), "cpu_count": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()], "versions": versions(),
    }
    if jax_devices:
        import jax

        facts["backend"] = jax.default_backend()
        facts["devices"] = [str(d) for d in jax.devices()]
    return facts


def median_time(fn: Callable[[], Any], reps: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall seconds of `fn()` over `reps` calls after `warmup` untimed ones; also every timing."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def write_result(path: str | Path, results: dict[str, Any], jax_devices: bool = True) -> Path:
    """Write `results` with the machine's facts (and the load at the end) as JSON; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    machine = results.get("machine") or machine_facts(jax_devices)
    machine = {**machine, "loadavg_end": [round(x, 2) for x in os.getloadavg()]}
    return write_json_atomic(path, {**results, "machine": machine})
