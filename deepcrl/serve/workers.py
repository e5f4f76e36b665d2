"""`deepcrl serve --workers N`: N server processes on one port, metrics summed over them, drained together.

The processes are run by uvicorn's own supervisor (`uvicorn.supervisors.Multiprocess`) rather than by
SO_REUSEPORT sockets and a supervisor of ours: it binds the port once in the parent, hands the listening
socket to N spawned workers, pings each one (replacing a dead or hung worker), and on SIGINT / SIGTERM sends
SIGTERM to every worker, each of which drains its in-flight requests (uvicorn's graceful shutdown, then its
batchers finish their queue) before the parent exits 0. SIGHUP restarts the workers one by one, SIGTTIN /
SIGTTOU add or remove one. What it needs is an app a spawned worker can build itself: the parent passes the
`ServeConfig` in an environment variable and each worker calls `worker_app()`, so every worker has its own
ONNX Runtime sessions and micro-batchers. The price of one shared socket: the kernel hands each new connection
to whichever worker accepts first, so the split is even only on average (long-lived connections such as
WebSocket control loops stay where they landed).

Metrics use prometheus_client's multiprocess mode: the parent points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh
temporary directory before spawning; each worker writes its counters, histograms and gauges there, and
``/metrics`` on any worker renders the sum over all workers (`deepcrl.serve.metrics`). When the supervisor
replaces or removes a worker (it died, hung, SIGHUP restarted it, SIGTTOU removed it), the old worker's live
gauges (in-flight requests, queued rows) are dropped from the sum; its counters and histograms stay, as
Prometheus expects of a counter.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

from deepcrl.errors import DeepcrlError
from deepcrl.serve.config import ServeConfig
from deepcrl.serve.control import CONTROL_DIR_ENV

CONFIG_ENV = "DEEPCRL_SERVE_WORKER_CONFIG"
"""Environment variable carrying the ServeConfig (JSON) from the parent to its workers."""
READY_TIMEOUT_S = 120


def _token(cfg: ServeConfig) -> str | None:
    if not cfg.token_env:
        return None
    token = os.environ.get(cfg.token_env)
    if not token:
        raise DeepcrlError(f"--token-env names {cfg.token_env}, but that environment variable is unset or empty.")
    return token


def _build(cfg: ServeConfig):
    from deepcrl.serve.app import create_app

    return create_app(cfg.model, max_batch_size=cfg.max_batch_size, max_queue_delay_us=cfg.max_queue_delay_us,
                      token=_token(cfg), max_body_bytes=cfg.max_body_bytes, timeout_s=cfg.timeout_s,
                      model_name=cfg.model_name, intra_op_threads=cfg.intra_op_threads, warmup=cfg.warmup,
                      max_in_flight=cfg.max_in_flight, model_control=cfg.model_control,
                      repository_poll_s=cfg.repository_poll_s, device=cfg.device,
                      critic=cfg.critic, plan=cfg.plan_options(), grpc_port=cfg.grpc_port, grpc_host=cfg.host,
                      grpc_reuse_port=cfg.workers > 1, control_dir=os.environ.get(CONTROL_DIR_ENV), tls=cfg.tls())


def worker_app():
    """The app of one worker (uvicorn's app factory, called in the spawned process)."""
    fields = json.loads(os.environ[CONFIG_ENV])
    return _build(ServeConfig(**{**fields, "model": Path(fields["model"])}))


def serve_workers(cfg: ServeConfig) -> int:
    """Run `cfg.workers` server processes on one port until SIGINT / SIGTERM; returns the exit code.

    The models are loaded once in the parent first, so a bad model, token or option is one sentence before
    any worker starts.
    """
    from uvicorn.supervisors import Multiprocess

    from deepcrl.serve.app import bind, check_port, url_of, uvicorn_config

    if cfg.workers < 1:
        raise DeepcrlError(f"--workers must be at least 1, got {cfg.workers}.")
    tls = cfg.tls()
    if tls is not None:
        tls.check()  # a bad file is one sentence here, not a traceback in every worker
    probe = _build(cfg)  # fails here, in one sentence, rather than N times in the workers
    names, default = ", ".join(probe.state.served), probe.state.default
    del probe
    if cfg.host not in ("127.0.0.1", "localhost", "::1") and cfg.token_env is None:
        print(f"deepcrl serve: warning: listening on {cfg.host} without a token (--token-env).", file=sys.stderr)
    sock = bind(cfg.host, cfg.port)
    url = url_of(sock, "http" if tls is None else "https")
    if cfg.grpc_port is not None:
        try:
            check_port(cfg.host, cfg.grpc_port)
        except DeepcrlError:
            sock.close()
            raise
    config = uvicorn_config(f"{__name__}:worker_app", log_level=cfg.log_level, max_body_bytes=cfg.max_body_bytes,
                            tls=tls)
    config.factory, config.workers = True, cfg.workers

    def ready() -> None:
        grpc = "" if cfg.grpc_port is None else f"gRPC{'' if tls is None else ' (TLS)'} at {cfg.host}:{cfg.grpc_port}; "
        print(f"deepcrl serve: ready at {url} ({grpc}{cfg.workers} workers; models: {names}; default {default}; "
              f"max_batch_size {cfg.max_batch_size}, max_queue_delay_us {cfg.max_queue_delay_us}, "
              f"auth {'on' if cfg.token_env else 'off'})", flush=True)

    class Supervisor(Multiprocess):
        failed = False

        def _replacing(self, step) -> None:
            """Run a step that may replace workers; the live gauges of the ones it replaced leave the sum."""
            from prometheus_client import multiprocess

            before = {p.pid for p in self.processes}
            step()
            for pid in before - {p.pid for p in self.processes}:
                if pid is not None:
                    multiprocess.mark_process_dead(pid)  # e.g. the in-flight count of a killed worker

        def keep_subprocess_alive(self) -> None:
            self._replacing(super().keep_subprocess_alive)

        def restart_all(self) -> None:
            self._replacing(super().restart_all)

        def handle_ttou(self) -> None:  # one worker fewer
            self._replacing(super().handle_ttou)

        def init_processes(self) -> None:
            super().init_processes()
            if all(p.wait_until_ready(READY_TIMEOUT_S, self.should_exit) for p in self.processes):
                ready()
            elif not self.should_exit.is_set():
                Supervisor.failed = True
                self.should_exit.set()

    saved = {k: os.environ.get(k) for k in (CONFIG_ENV, "PROMETHEUS_MULTIPROC_DIR", CONTROL_DIR_ENV)}
    with tempfile.TemporaryDirectory(prefix="deepcrl-metrics-") as metrics_dir, \
            tempfile.TemporaryDirectory(prefix="deepcrl-control-") as control_dir:
        # Spawned workers inherit the environment: their config, where their metrics go, and (explicit or poll
        # model control) the directory through which a load on one worker reaches all of them (`control.py`).
        os.environ[CONFIG_ENV] = json.dumps({k: str(v) if isinstance(v, Path) else v
                                             for k, v in dataclasses.asdict(cfg).items()})
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        if cfg.model_control != "none":
            os.environ[CONTROL_DIR_ENV] = control_dir
        else:
            os.environ.pop(CONTROL_DIR_ENV, None)
        try:
            Supervisor(config, sockets=[sock]).run()
        finally:
            sock.close()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    if Supervisor.failed:
        raise DeepcrlError(f"not every one of the {cfg.workers} server workers became ready within "
                           f"{READY_TIMEOUT_S} s (their errors are above).")
    return 0
