"""Serve latency benchmark: deepcrl's server (HTTP+JSON, HTTP+msgpack, WebSocket; closed and open loop) beside
the in-process ONNX Runtime floor, the server's empty endpoint and a hand-written FastAPI baseline.

Usage: python benchmarks/serve_latency.py [--model POLICY.onnx] [--duration-s 1.5] [...]
(the same flags as `deepcrl bench serve`). Without --model it exports a freshly initialised student of the
default size (point_maze, hidden 256x256) first, so the served network is what `deepcrl export` writes.
Writes benchmarks/results/serve_latency.json and .png.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

import tyro

from deepcrl.errors import DeepcrlError
from deepcrl.bench.config import BenchServeConfig
from deepcrl.cli.bench import run_serve


def _student_onnx(folder: Path) -> Path:
    from deepcrl.export.config import ExportConfig
    from deepcrl.export.onnx import export
    from deepcrl.policy import init_artifact

    init_artifact(folder / "student", "student", "point_maze", {"hidden": [256, 256]})
    export(ExportConfig(run=folder / "student", out=folder / "student.onnx"))
    return folder / "student.onnx"


def main() -> int:
    cfg = tyro.cli(BenchServeConfig)
    with tempfile.TemporaryDirectory() as tmp:
        if cfg.model is None and cfg.url is None:
            cfg = dataclasses.replace(cfg, model=_student_onnx(Path(tmp)))
        return run_serve(cfg)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except DeepcrlError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
