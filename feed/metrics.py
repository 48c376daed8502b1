"""Prometheus metrics of the API and the workers.

A `feed worker` process serves its own values. The processes of one `feed api` run
share theirs through prometheus-client's multiprocess mode: `feed api` points
``PROMETHEUS_MULTIPROC_DIR`` at a directory of the run's own before prometheus_client
is imported, every process writes its values there, and /metrics adds them up, so any
process answering a scrape shows the whole API.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

__all__ = [
    "AUTH_FAILURES",
    "BUILD_INFO",
    "CACHE_FALLBACKS",
    "CACHE_LOOKUPS",
    "DYNAMODB_CALLS",
    "DYNAMODB_RETRIES",
    "EVENTS_APPLIED",
    "FANOUT_ENTRIES",
    "FANOUT_LAG",
    "HTTP_REFUSED",
    "LOOP_LAG",
    "MULTIPROCESS",
    "QUEUE_DEPTH",
    "READS_SHED",
    "REQUEST_LATENCY",
    "exposition",
    "process_exiting",
]

# prometheus_client chose, when first imported, where this process's values live: in its
# own memory, or (PROMETHEUS_MULTIPROC_DIR set) in files shared with the other processes.
# /metrics must read them from where they are.
MULTIPROCESS: bool = bool(getattr(values.ValueClass, "_multiprocess", False))

_FAST = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

REQUEST_LATENCY = Histogram(
    "feed_http_request_duration_seconds",
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
    "feed_dynamodb_call_duration_seconds",
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
    "feed_fanout_lag_duration_seconds",
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
# Every process that reports it reads the same Redis list: the latest reading is the
# depth, where a sum would count the queue once per process.
QUEUE_DEPTH = Gauge("feed_queue_depth", "Jobs waiting in each arq queue.", ["queue"],
                    multiprocess_mode="mostrecent")
STREAMS_OPEN = Gauge("feed_streams_open",
                     "Realtime feed streams open, summed over the API processes.",
                     multiprocess_mode="livesum")
QUEUE_UNREPLICATED = Counter(
    "feed_queue_unreplicated_total",
    "Event batches refused (503) because fewer replicas than FEED_QUEUE_MIN_REPLICAS "
    "acknowledged them in time, or the queue's primary changed meanwhile.",
)
LOOP_LAG = Histogram(
    "feed_event_loop_lag_duration_seconds",
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
CACHE_FALLBACKS = Counter(
    "feed_cache_fallbacks_total",
    "Cache calls that failed and were done without, by operation: the data comes from "
    "DynamoDB (reads) or the cache refills later (writes).",
    ["op"],
)

# Every process of a run is the same build and says 1: the maximum is that 1 once, where
# "all" would repeat it per process (with a pid label) and a sum would count processes.
BUILD_INFO = Gauge(
    "feed_build_info",
    "The running build: the service's version and Python's (the value is always 1).",
    ["version", "python"],
    multiprocess_mode="max",
)


def _version() -> str:
    try:
        return importlib.metadata.version("koo-feed")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "unknown"


BUILD_INFO.labels(_version(), platform.python_version()).set(1)


def exposition() -> bytes:
    """The text of /metrics: with a shared directory, every process's values added up
    (a fresh registry per scrape, so nothing of an earlier scrape is kept)."""
    if not MULTIPROCESS:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def process_exiting() -> None:
    """Take this process's live-mode gauges out of the shared directory (nothing to do
    without one). Counters and histograms stay: what an exited process counted still
    happened."""
    if MULTIPROCESS:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
