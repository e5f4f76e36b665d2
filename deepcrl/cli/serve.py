"""`deepcrl serve`: run the policy server until interrupted."""

from __future__ import annotations

from deepcrl.serve.config import ServeConfig


def run(cfg: ServeConfig) -> int:
    if cfg.workers != 1:
        from deepcrl.serve.workers import serve_workers

        return serve_workers(cfg)
    from deepcrl.serve.app import serve

    serve(cfg)
    return 0
