"""What `GET /metrics` exposes to Prometheus: requests, latency, tokens, the served version, switches, refusals.

Each server has its own collector registry (no process-wide state), so two servers in one process (tests) count
apart.
"""

from __future__ import annotations

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "sqltune_serve_requests", "Requests answered, by endpoint and status.", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "sqltune_serve_request_seconds",
            "Seconds from request to the last byte of the answer, by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("sqltune_serve_requests_in_flight", "Requests being answered now.", registry=r)
        self.prompt_tokens = Counter("sqltune_serve_prompt_tokens", "Prompt tokens of answered requests.", registry=r)
        self.completion_tokens = Counter("sqltune_serve_completion_tokens", "Tokens generated.", registry=r)
        self.version = Gauge(
            "sqltune_serve_adapter_version", "1 for the adapter version being served, 0 for earlier ones.", ["version"],
            registry=r,
        )  # fmt: skip
        self.switches = Counter(
            "sqltune_serve_adapter_switches", "Times the served version changed (promotions, rollbacks).", registry=r
        )
        self.refused = Counter(
            "sqltune_serve_refused_versions",
            "Versions the channel pointed at that were refused (did not verify, load or answer).",
            ["version"],
            registry=r,
        )
        self.channel_errors = Counter(
            "sqltune_serve_channel_read_errors", "Failed reads of the channel pointer (S3 errors).", registry=r
        )
        self.batch_sequences = Histogram(
            "sqltune_serve_batch_sequences", "Sequences per generate() call (HF backend).", buckets=BATCH_BUCKETS,
            registry=r,
        )  # fmt: skip

    def serving(self, version: str, previous: str | None) -> None:
        if previous is not None and previous != version:
            self.version.labels(previous).set(0)
            self.switches.inc()
        self.version.labels(version).set(1)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def tokens(self, prompt: int, completion: int) -> None:
        self.prompt_tokens.inc(prompt)
        self.completion_tokens.inc(completion)
