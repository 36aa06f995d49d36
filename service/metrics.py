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
        self.worker_busy = Gauge("spark_worker_busy", "1 while the worker runs a job", ["worker", "device"],
                                 registry=r)
        self.worker_busy_seconds = Gauge("spark_worker_busy_seconds", "seconds the worker spent on jobs",
                                         ["worker", "device"], registry=r)
        self.ready = Gauge("spark_ready", "1 when the model pack is loaded", registry=r)
        for outcome in ("succeeded", "failed", "canceled"):
            self.jobs.labels(outcome)

    def update_workers(self, workers) -> None:
        for w in workers:
            self.worker_busy.labels(w.worker_id, w.device).set(1 if w.current else 0)
            self.worker_busy_seconds.labels(w.worker_id, w.device).set(round(w.busy_seconds(), 3))

    def render(self) -> bytes:
        return generate_latest(self.registry)
