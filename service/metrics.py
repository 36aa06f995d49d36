"""Prometheus metrics (own registry, so several apps in one process never collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.jobs = Counter("spark_jobs", "finished jobs by outcome", ["outcome"], registry=r)
        self.queue_depth = Gauge("spark_queue_depth", "jobs waiting in the queue", registry=r)
        self.running = Gauge("spark_jobs_running", "jobs running now", registry=r)
        self.audio_seconds = Counter("spark_audio_seconds", "seconds of input audio separated", registry=r)
        self.processing_seconds = Counter("spark_processing_seconds", "wall seconds spent separating",
                                          registry=r)
        self.stage_seconds = Histogram("spark_stage_seconds", "seconds per engine stage", ["stage"], registry=r,
                                       buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, float("inf")))
        self.ready = Gauge("spark_ready", "1 when the model pack is loaded", registry=r)
        for outcome in ("succeeded", "failed", "canceled"):
            self.jobs.labels(outcome)

    def render(self) -> bytes:
        return generate_latest(self.registry)
