"""The serving path on a GPU: ONNX Runtime's CPU vs CUDA provider, directly and through `deepcrl serve --device`.

Two policies, made here with deepcrl's own export code from freshly initialised artifacts (random weights: the
values do not change the speed): a student (MLP 256x256) and a teacher actor of depth 64, width 256 (the deep
end of the recipe). For each policy and each device in `--devices`:

- ONNX Runtime directly (`OnnxPolicy` with the device's providers): latency of one row (p50 / p99 over
  `--duration-s`) and throughput at batch 256 (rows per second);
- through the server (`deepcrl serve --device D --max-batch-size 256` in its own process; this process is the load
  generator, raw keep-alive HTTP/1.1, msgpack bodies): latency of a one-row request at concurrency 1, and
  throughput with 256-row requests at concurrency 4 (rows per second).

Each cell records the providers that really ran (the session's `get_providers()`, the server's metadata): a
device that is not there is skipped with the reason instead of being measured on the CPU by accident.
Nothing is installed here: the GPU box needs deepcrl's dependencies with onnxruntime-gpu in place of
onnxruntime (and fastapi, uvicorn, httptools, uvloop, orjson, msgpack for the server part; it is skipped
without them).

Usage: python benchmarks/serve_gpu.py [--smoke] [--devices cpu cuda] [--env ant]
       python benchmarks/serve_gpu.py --export-to DIR   (here: make the two .onnx files)
       python benchmarks/serve_gpu.py --models-dir DIR  (there: measure them; needs no JAX)
Writes benchmarks/results/serve_gpu.json (--smoke: tiny policies, short cells, /tmp/serve_gpu_smoke.json).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import tyro


@dataclasses.dataclass(frozen=True)
class ServeGpuConfig:
    """CPU vs CUDA provider for a student and a depth-64 teacher, directly and through the server."""

    devices: tuple[str, ...] = ("cpu", "cuda")
    """Devices to measure (cpu, cuda, tensorrt); one whose provider does not run is skipped with the reason."""
    env: str = "ant"
    """Environment whose sizes the policies take."""
    duration_s: float = 3.0
    """Seconds per timed cell."""
    server: bool = True
    """Also measure through `deepcrl serve` (skipped when fastapi / uvicorn are not installed)."""
    smoke: bool = False
    """Tiny policies (teacher depth 4, width 32), point_maze, 0.3 s cells, result in /tmp: checks the script
    on a CPU."""
    out: Path = Path("benchmarks/results/serve_gpu.json")
    """Result JSON."""
    models_dir: Path | None = None
    """Use student.onnx and teacher.onnx from this directory instead of exporting them (for a box without JAX
    or jax2onnx: make them elsewhere with --export-to)."""
    export_to: Path | None = None
    """Only export the two policies into this directory (student.onnx, teacher.onnx) and stop."""


def _make_onnx(folder: Path, kind: str, env: str, actor: dict[str, Any]) -> Path:
    """A freshly initialised artifact exported by deepcrl's export code (no parity run: weights are random)."""
    import onnx

    from deepcrl.export import contract
    from deepcrl.export.onnx import set_metadata, to_onnx_model
    from deepcrl.policy import init_artifact, load_policy

    run = folder / kind
    init_artifact(run, kind, env, actor)
    policy = load_policy(run, deploy=True)
    model = to_onnx_model(policy)
    set_metadata(model, contract.metadata_for(policy, {"precision": "fp32", "note": "random weights",
                                                       "network": json.dumps(actor)}))
    path = folder / f"{kind}.onnx"
    onnx.save(model, str(path))
    return path


def _describe(path: Path) -> dict[str, Any]:
    """What the file is: its kind, env and network from the export metadata, and its size."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return {"bytes": os.path.getsize(path), **{k: meta.get(k) for k in ("kind", "env_id", "network", "obs_size",
                                                                         "goal_size", "action_size")}}


def _timed(fn, duration_s: float) -> np.ndarray:
    for _ in range(5):
        fn()
    lat = []
    end = time.perf_counter() + duration_s
    while (t := time.perf_counter()) < end:
        fn()
        lat.append(time.perf_counter() - t)
    return np.asarray(lat)


def _direct(path: Path, device: str, duration_s: float) -> dict[str, Any]:
    from deepcrl.errors import DeepcrlError
    from deepcrl.export.runtime import OnnxPolicy
    from deepcrl.serve.device import check_providers, providers_for

    policy = OnnxPolicy(path, providers=providers_for(device))
    running = policy.session.get_providers()
    try:
        check_providers(device, running, path)
    except DeepcrlError as exc:
        return {"skipped": str(exc), "providers": running}
    rng = np.random.default_rng(0)
    one = (rng.standard_normal((1, policy.obs_size), np.float32), rng.standard_normal((1, policy.goal_size),
                                                                                       np.float32))
    big = (rng.standard_normal((256, policy.obs_size), np.float32),
           rng.standard_normal((256, policy.goal_size), np.float32))
    lat = _timed(lambda: policy(*one), duration_s)
    big_lat = _timed(lambda: policy(*big), duration_s)
    return {"providers": running, "batch1_p50_us": round(float(np.percentile(lat, 50)) * 1e6, 1),
            "batch1_p99_us": round(float(np.percentile(lat, 99)) * 1e6, 1),
            "batch256_call_p50_us": round(float(np.percentile(big_lat, 50)) * 1e6, 1),
            "batch256_rows_per_s": round(float(256 * len(big_lat) / big_lat.sum()), 0)}


def _through_server(path: Path, device: str, duration_s: float) -> dict[str, Any]:
    import httpx
    import msgpack

    from deepcrl.bench.load import Run, closed_loop, http_connect, http_requests
    from deepcrl.bench.serve import _start, _stop
    from deepcrl.errors import DeepcrlError

    try:
        proc, url = _start([sys.executable, "-m", "deepcrl.cli", "serve", "--model", str(path), "--port", "0",
                            "--device", device, "--max-batch-size", "256", "--warmup", "8"], timeout=600)
    except DeepcrlError as exc:
        return {"skipped": str(exc)[-400:]}
    try:
        meta = httpx.get(url + "/v1/metadata", timeout=30).json()
        rng = np.random.default_rng(0)

        def body(rows: int) -> list[bytes]:
            obs = rng.standard_normal((rows, meta["obs_size"]), np.float32)
            goal = rng.standard_normal((rows, meta["goal_size"]), np.float32)
            return [msgpack.packb({"observations": obs.tobytes(), "goals": goal.tobytes()})]

        cells = {}
        for name, rows, concurrency in (("batch1_c1", 1, 1), ("batch256_c4", 256, 4)):
            requests = http_requests(url, "/v1/act", body(rows), "application/msgpack", None)
            run = Run()
            asyncio.run(closed_loop(lambda: http_connect(url), requests, concurrency, duration_s, run))
            st = run.stats()
            cells[name] = {k: st.get(k) for k in ("requests", "errors", "p50_us", "p99_us", "throughput_rps")}
            cells[name]["rows_per_s"] = round((st["throughput_rps"] or 0) * rows, 0)
        return {"providers": meta.get("providers"), "device": meta.get("device"), **cells}
    finally:
        _stop(proc)


def _gpu_name() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def main(cfg: ServeGpuConfig) -> int:
    import onnxruntime as ort

    from deepcrl.bench.common import machine_facts, write_result

    duration = 0.3 if cfg.smoke else cfg.duration_s
    env = "point_maze" if cfg.smoke else cfg.env
    teacher = {"depth": 4, "width": 32} if cfg.smoke else {"depth": 64, "width": 256}
    out = Path("/tmp/serve_gpu_smoke.json") if cfg.smoke and cfg.out == ServeGpuConfig.out else cfg.out
    has_server = cfg.server and all(importlib.util.find_spec(m) for m in ("fastapi", "uvicorn", "httpx"))
    results: dict[str, Any] = {
        "benchmark": "serve_gpu", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {**machine_facts(jax_devices=False), "gpu": _gpu_name()},
        "onnxruntime": {"version": ort.__version__, "available_providers": ort.get_available_providers()},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(cfg).items()},
        "server_part": "measured" if has_server else "skipped: --no-server" if not cfg.server else
                       "skipped: fastapi / uvicorn / httpx not installed",
        "cells": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = cfg.export_to or cfg.models_dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        if cfg.models_dir is None:
            _make_onnx(folder, "student", env, {"hidden": [256, 256]})
            _make_onnx(folder, "teacher", env, teacher)
        if cfg.export_to is not None:
            print(f"wrote {folder / 'student.onnx'} and {folder / 'teacher.onnx'}")
            return 0
        results["models"] = {k: _describe(folder / f"{k}.onnx") for k in ("student", "teacher")}
        models = {"student": folder / "student.onnx", "teacher": folder / "teacher.onnx"}
        for name, path in models.items():
            for device in cfg.devices:
                cell: dict[str, Any] = {"model": name, "device": device, "onnx_bytes": os.path.getsize(path),
                                        "direct": _direct(path, device, duration)}
                if has_server and "skipped" not in cell["direct"]:
                    cell["server"] = _through_server(path, device, duration)
                results["cells"].append(cell)
                print(f"{name} {device}: {cell['direct']} {cell.get('server', '')}", flush=True)
    write_result(out, results, jax_devices=False)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(ServeGpuConfig)))
