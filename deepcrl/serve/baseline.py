"""The hand-written baseline of `deepcrl bench serve`: what a user would write without deepcrl.

A minimal FastAPI app with a pydantic request/response model and one ONNX Runtime call per request in a plain
``def`` endpoint (FastAPI runs it on its thread pool, as its docs advise for blocking calls). It runs under the
same uvicorn settings and the same ORT session options as deepcrl's server, so the benchmark's ratios measure
the serving design rather than ORT or event-loop tuning. Run: ``python -m deepcrl.serve.baseline --model F``.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel


class ActRequest(BaseModel):
    observation: list[float]
    goal: list[float]


class ActResponse(BaseModel):
    action: list[float]


def create_baseline_app(model_path: str) -> FastAPI:
    """The baseline app: ``POST /v1/act`` with ``{"observation", "goal"}`` -> ``{"action"}`` (JSON only)."""
    from deepcrl.serve.runner import OnnxModel

    model = OnnxModel(model_path)
    model.warmup()
    app = FastAPI()

    @app.post("/v1/act", response_model=ActResponse)
    def act(request: ActRequest) -> ActResponse:
        action = model(np.asarray([request.observation], np.float32), np.asarray([request.goal], np.float32))
        return ActResponse(action=action[0].tolist())

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from deepcrl.serve.app import bind, url_of, uvicorn_config

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    app = create_baseline_app(args.model)
    sock = bind(args.host, args.port)
    url = url_of(sock)

    class _Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            print(f"baseline: ready at {url}", flush=True)

    _Server(uvicorn_config(app)).run(sockets=[sock])


if __name__ == "__main__":
    main(sys.argv[1:])
