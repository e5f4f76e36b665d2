"""`deepcrl serve`: run the policy server until interrupted."""

from __future__ import annotations

from deepcrl.serve.config import ServeConfig


def run(cfg: ServeConfig) -> int:
    from deepcrl.serve.app import serve

    serve(cfg)
    return 0
