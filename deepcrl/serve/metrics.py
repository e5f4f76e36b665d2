"""Prometheus metrics of one server instance (its own registry, so several apps can live in one process).

Under ``deepcrl serve --workers N`` (``PROMETHEUS_MULTIPROC_DIR`` set before the worker started), every worker
writes its values to files there and `render` returns the sum over all workers (prometheus_client's
multiprocess mode; gauges sum over the live workers).
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Loopback requests take tens of microseconds to a few milliseconds: the default buckets start at 5 ms.
LATENCY_BUCKETS = (25e-6, 50e-6, 100e-6, 200e-6, 300e-6, 500e-6, 750e-6, 1e-3, 2e-3, 5e-3, 10e-3, 25e-3,
                   50e-3, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServeMetrics:
    """Request counts by status, latency and inference histograms, batch sizes and queue depth."""

    def __init__(self, max_batch: int):
        self.registry = CollectorRegistry()
        self.requests = Counter("deepcrl_requests", "Requests answered, by endpoint, protocol and status.",
                                ["endpoint", "protocol", "status"], registry=self.registry)
        self.latency = Histogram("deepcrl_request_latency_seconds",
                                 "Time from a request's body (or frame) received to its answer ready.",
                                 ["endpoint", "protocol"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.inference = Histogram("deepcrl_inference_seconds", "ONNX Runtime call time per batch.",
                                   ["model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        buckets = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, max_batch})
        self.batch_size = Histogram("deepcrl_batch_rows", "Rows per ONNX Runtime call (micro-batching).",
                                    ["model"], buckets=[b for b in buckets if b <= max_batch],
                                    registry=self.registry)
        self.queue_depth = Gauge("deepcrl_queue_rows", "Rows waiting for an ONNX Runtime call.", ["model"],
                                 registry=self.registry, multiprocess_mode="livesum")
        self.in_flight = Gauge("deepcrl_in_flight_requests", "Requests being answered.", registry=self.registry,
                               multiprocess_mode="livesum")
        self.in_flight_limit = Gauge("deepcrl_in_flight_limit", "The bound on requests in flight in force: "
                                     "--max-in-flight, or an eighth of it while a queue stands (admission.py).",
                                     registry=self.registry, multiprocess_mode="liveall")
        self.sheds = Counter("deepcrl_sheds", "Times a standing queue tightened the in-flight bound.",
                             registry=self.registry)
        self.refused = Counter("deepcrl_refused", "Requests refused with 503 before any work, by reason "
                               "(in_flight: the process's bound; queue: the batcher's queue full).", ["reason"],
                               registry=self.registry)
        self.refused_in_flight = self.refused.labels("in_flight")  # the overload path's counter, looked up once
        self.deadline_exceeded = Counter("deepcrl_deadline_exceeded", "Requests answered 504 because their deadline "
                                         "passed, by where they were (arrival, queue: dropped uncomputed by the "
                                         "batcher, waiting: queued or computing).", ["where"],
                                         registry=self.registry)
        self.model_version = Gauge("deepcrl_model_version", "The version of each model new requests go to.",
                                   ["model"], registry=self.registry, multiprocess_mode="liveall")
        self.answered = Counter("deepcrl_model_answers", "Inference requests answered, by model and the version "
                                "that computed them.", ["model", "version"], registry=self.registry)
        # `.labels()` takes a lock and builds a key each time; the hot path caches the children.
        self._counters: dict[tuple[str, str, int], object] = {}
        self._histograms: dict[tuple[str, str], object] = {}

    def observe(self, endpoint: str, protocol: str, status: int, seconds: float | None) -> None:
        """Count one answered request (and its latency, for the ones that reached the model)."""
        key = (endpoint, protocol, status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.requests.labels(endpoint, protocol, str(status))
        counter.inc()
        if seconds is not None:
            hist = self._histograms.get(key[:2])
            if hist is None:
                hist = self._histograms[key[:2]] = self.latency.labels(endpoint, protocol)
            hist.observe(seconds)

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # the sum over every worker's files
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
