"""The server's Prometheus metrics, in a registry of its own (`/metrics` serves it as text)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

OUTCOMES = ("completed", "cancelled", "rejected", "queue_full", "aborted", "error")
STEP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, n_slots: int):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("cupy_getp_requests", "Requests by endpoint and outcome", ["endpoint", "outcome"],
                                registry=r)
        self.prompt_tokens = Counter("cupy_getp_prompt_tokens", "Prompt tokens of admitted requests", registry=r)
        self.generated_tokens = Counter("cupy_getp_generation_tokens", "Tokens generated", registry=r)
        self.queue_depth = Gauge("cupy_getp_queue_depth", "Requests waiting for a slot", registry=r)
        self.running = Gauge("cupy_getp_running_slots", "Slots running a request", registry=r)
        self.slots = Gauge("cupy_getp_slots", "Request slots of the engine", registry=r)
        self.step_seconds = Histogram("cupy_getp_step_seconds", "Time of one engine step", buckets=STEP_BUCKETS,
                                      registry=r)
        self.slots.set(n_slots)

    def count(self, endpoint: str, outcome: str) -> None:
        self.requests.labels(endpoint, outcome).inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)
