"""Prometheus collectors, on a registry of our own (one per server, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.connections = Gauge("voxws_connections_open", "Open WebSocket connections", registry=r)
        self.connections_total = Counter("voxws_connections_total", "Accepted WebSocket connections", registry=r)
        self.handshake_refused = Counter("voxws_handshake_refused_total", "Handshakes refused, by HTTP status",
                                         ["status"], registry=r)
        self.contexts_active = Gauge("voxws_contexts_active", "Contexts open (queued, generating or streaming)",
                                     registry=r)
        self.contexts_queued = Gauge("voxws_contexts_queued", "Contexts waiting for an engine slot", registry=r)
        self.contexts = Counter("voxws_contexts_total", "Finished contexts by outcome", ["outcome"], registry=r)
        self.engine_running = Gauge("voxws_engine_slots_in_use", "Engine requests in flight", registry=r)
        self.queue_wait = Histogram("voxws_queue_wait_seconds", "Time a context waited for an engine slot",
                                    buckets=_LATENCY_BUCKETS, registry=r)
        self.ttfb = Histogram("voxws_ttfb_seconds", "Context opened to first audio frame sent",
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.audio_seconds = Counter("voxws_audio_seconds_total", "Seconds of audio sent", registry=r)
        self.chunks = Counter("voxws_chunks_total", "Audio frames sent", registry=r)
        self.errors = Counter("voxws_errors_total", "Error messages sent, by code", ["code"], registry=r)
        self.slow_consumers = Counter("voxws_slow_consumers_total", "Sockets closed as slow consumers", registry=r)
        self.drains = Counter("voxws_drains_total", "Drains started (SIGTERM)", registry=r)
        self.ready = Gauge("voxws_ready", "1 when the engine is loaded and the server is not draining", registry=r)

    def value(self, name: str, **labels: str) -> float:
        """One sample's current value (0 when it has none yet): for tests and status pages."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def render(self) -> bytes:
        return generate_latest(self.registry)
