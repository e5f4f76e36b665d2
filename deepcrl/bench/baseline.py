"""The hand-written baseline of `deepcrl bench serve`: what a user would write without deepcrl.

A minimal FastAPI app with a pydantic request/response model and one ONNX Runtime call per request in a plain
``def`` endpoint (FastAPI runs it on its thread pool, as its docs advise for blocking calls). It runs under the
same uvicorn settings and the same ORT session (`OnnxPolicy`) as deepcrl's server, so the benchmark's ratios
measure the serving design rather than ORT or event-loop tuning.
Run: ``python -m deepcrl.bench.baseline --model F``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel


class ActRequest(BaseModel):
    observation: list[float]
    goal: list[float]


class ActResponse(BaseModel):
    action: list[float]


@dataclasses.dataclass(frozen=True)
class BaselineConfig:
    """Serve an exported policy with the hand-written baseline (loopback only)."""

    model: Path
    """An .onnx file written by `deepcrl export`."""
    host: str = "127.0.0.1"
    """Address to bind."""
    port: int = 0
    """TCP port (0 picks a free one; the ready line prints it)."""


def create_baseline_app(model_path: str | Path) -> FastAPI:
    """The baseline app: ``POST /v1/act`` with an observation and a goal -> an action (JSON only)."""
    from deepcrl.onnx_policy import OnnxPolicy

    model = OnnxPolicy(model_path, providers=["CPUExecutionProvider"])
    model.warmup()
    app = FastAPI()

    @app.post("/v1/act", response_model=ActResponse)
    def act(request: ActRequest) -> ActResponse:
        action = model(np.asarray([request.observation], np.float32), np.asarray([request.goal], np.float32))
        return ActResponse(action=action[0].tolist())

    return app


def main(cfg: BaselineConfig) -> None:
    import uvicorn

    from deepcrl.serve.app import bind, url_of, uvicorn_config

    app = create_baseline_app(cfg.model)
    sock = bind(cfg.host, cfg.port)
    url = url_of(sock)

    class _Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            print(f"baseline: ready at {url}", flush=True)

    _Server(uvicorn_config(app)).run(sockets=[sock])


if __name__ == "__main__":
    import tyro

    main(tyro.cli(BaselineConfig))
