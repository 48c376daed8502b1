"""Prometheus metrics of the API and the workers (one registry per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "AUTH_FAILURES",
    "CACHE_LOOKUPS",
    "DYNAMODB_CALLS",
    "DYNAMODB_RETRIES",
    "EVENTS_APPLIED",
    "FANOUT_ENTRIES",
    "FANOUT_LAG",
    "HTTP_REFUSED",
    "LOOP_LAG",
    "QUEUE_DEPTH",
    "READS_SHED",
    "REQUEST_LATENCY",
]

_FAST = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

REQUEST_LATENCY = Histogram(
    "feed_http_request_seconds",
    "Latency of read-API requests by route.",
    ["route", "method", "status"],
    buckets=_FAST,
)
CACHE_LOOKUPS = Counter(
    "feed_cache_lookups_total",
    "Hot-cache lookups by what they found (hit, miss).",
    ["kind", "result"],
)
HTTP_REFUSED = Counter(
    "feed_http_refused_total",
    "Requests and connections the server refused before the app saw them, by reason.",
    ["reason"],
)
DYNAMODB_CALLS = Histogram(
    "feed_dynamodb_call_seconds",
    "Latency of DynamoDB calls by operation.",
    ["operation"],
    buckets=_FAST,
)
DYNAMODB_RETRIES = Counter(
    "feed_dynamodb_retries_total",
    "Requests retried by the service after throttling or unprocessed items.",
    ["operation", "reason"],
)
FANOUT_LAG = Histogram(
    "feed_fanout_lag_seconds",
    "Time from a koo's event to its delivery into follower timelines (per chunk).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
FANOUT_ENTRIES = Counter(
    "feed_fanout_entries_total", "Timeline entries written by fan-out.", ["target"]
)
EVENTS_APPLIED = Counter(
    "feed_events_total",
    "Events handled by the workers, by type and outcome.",
    ["type", "outcome"],
)
QUEUE_DEPTH = Gauge("feed_queue_depth", "Jobs waiting in each arq queue.", ["queue"])
LOOP_LAG = Histogram(
    "feed_event_loop_lag_seconds",
    "How late the process's event loop wakes a sampler that sleeps 50 ms (the API's).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

READS_SHED = Counter(
    "feed_api_reads_shed_total",
    "Reads refused at once (503) because FEED_API_MAX_IN_FLIGHT reads were in flight.",
)
AUTH_FAILURES = Counter(
    "feed_api_auth_failures_total",
    "Requests refused by authentication, by answer: unauthorized (401, a missing or wrong "
    "token) or rate_limited (429, too many failures from the client's address).",
    ["answer"],
)
