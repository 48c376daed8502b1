"""Settings: the one place that reads the environment.

Every variable is prefixed ``FEED_``. An invalid value fails at start-up with
a :class:`SettingsError` that names the variable; nothing is read lazily.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from config import parsers as parse

__all__ = ["RankWeights", "Settings", "SettingsError"]

PREFIX = "FEED_"
T = TypeVar("T")


class SettingsError(ValueError):
    """A configuration variable is missing or has an invalid value."""


@dataclass(frozen=True, slots=True)
class RankWeights:
    """Weights of the ranking components (see feed.ranking)."""

    recency: float = 1.0
    engagement: float = 0.35
    affinity: float = 0.5
    diversity: float = 0.3
    half_life_hours: float = 6.0


def _env_default_cursor_secret(tokens: tuple[str, ...]) -> str:
    # Deterministic across API processes that share the same tokens, so a
    # cursor issued by one process is accepted by another.
    material = "\n".join(sorted(tokens)) or "koo-feed-development"
    return hashlib.sha256(b"koo-feed-cursor\n" + material.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Settings:
    """Runtime configuration, built from ``FEED_*`` variables by :meth:`from_env`."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    cache_redis_url: str = ""
    dynamodb_endpoint: str | None = None
    aws_region: str = "ap-south-1"
    table_prefix: str = "feed_"
    api_tokens: tuple[str, ...] = ()
    celebrity_followers: int = 10_000
    timeline_cache_items: int = 800
    backfill_on_follow: int = 200
    rate_limit_per_token: float = 0.0
    auth_failures_per_minute: int = 30
    active_days: int = 7
    timeline_max_items: int = 5_000
    timeline_ttl_days: int = 30
    fanout_chunk_size: int = 1_000
    fanout_deadline_seconds: int = 120
    recommended_every: int = 10
    cursor_secret: str = ""
    cursor_ttl_seconds: int = 3_600
    ledger_ttl_days: int = 7
    dynamodb_connect_timeout: float = 2.0
    dynamodb_read_timeout: float = 5.0
    dynamodb_max_attempts: int = 4
    dynamodb_retry_mode: str = "standard"
    dynamodb_client: str = "direct"
    dynamodb_pitr: bool | None = None  # None: on for AWS's endpoints, off for custom ones
    dynamodb_concurrency: int = 16
    redis_timeout: float = 2.0
    api_timeout: float = 0.8
    api_max_in_flight: int = 64
    api_request_timeout: float = 10.0
    job_max_tries: int = 8
    worker_max_jobs: int = 32
    worker_metrics_port: int = 9108
    worker_metrics_host: str = "127.0.0.1"
    log_level: str = "INFO"
    log_json: bool = True
    notify_group_hours: int = 24
    notify_ttl_days: int = 30
    stream_max_per_process: int = 5_000
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str = ""
    queue_min_replicas: int = 0
    queue_replica_timeout: float = 1.0
    regions: Mapping[str, tuple[str | None, str]] = field(default_factory=dict)
    weights: RankWeights = field(default_factory=RankWeights)

    def __post_init__(self) -> None:
        if not self.cache_redis_url:
            object.__setattr__(self, "cache_redis_url", self.redis_url)
        if not self.cursor_secret:
            object.__setattr__(
                self, "cursor_secret", _env_default_cursor_secret(self.api_tokens)
            )

    @property
    def celebrity_recent_items(self) -> int:
        """How many recent koos of a celebrity are kept for pull at read time."""
        return max(self.backfill_on_follow, 200)

    def pitr_enabled(self, endpoint: str | None) -> bool:
        """Whether ``feed tables create`` turns on point-in-time recovery for the tables
        behind ``endpoint`` (None: AWS's own). Unset, only on AWS: an emulator's backups
        protect nothing, and DynamoDB Local has none."""
        return endpoint is None if self.dynamodb_pitr is None else self.dynamodb_pitr

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from the environment (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        reader = _Reader(env)
        tokens: tuple[str, ...] = reader.get("API_TOKENS", parse.tokens, ())
        base = RankWeights()
        weights = RankWeights(
            recency=reader.get("RANK_W_RECENCY", parse.non_negative_float, base.recency),
            engagement=reader.get(
                "RANK_W_ENGAGEMENT", parse.non_negative_float, base.engagement
            ),
            affinity=reader.get("RANK_W_AFFINITY", parse.non_negative_float, base.affinity),
            diversity=reader.get(
                "RANK_W_DIVERSITY", parse.non_negative_float, base.diversity
            ),
            half_life_hours=reader.get(
                "RANK_HALF_LIFE_HOURS", parse.positive_float, base.half_life_hours
            ),
        )
        defaults = cls()
        values: dict[str, Any] = {
            "redis_url": reader.get("REDIS_URL", parse.redis_url, defaults.redis_url),
            "cache_redis_url": reader.get("CACHE_REDIS_URL", parse.redis_url, ""),
            "dynamodb_endpoint": reader.get("DYNAMODB_ENDPOINT", parse.http_url, None),
            "aws_region": reader.get("AWS_REGION", parse.region, defaults.aws_region),
            "table_prefix": reader.get("TABLE_PREFIX", parse.table_prefix, defaults.table_prefix),
            "api_tokens": tokens,
            "celebrity_followers": reader.get(
                "CELEBRITY_FOLLOWERS", parse.positive_int, defaults.celebrity_followers
            ),
            "timeline_cache_items": reader.get(
                "TIMELINE_CACHE_ITEMS", parse.positive_int, defaults.timeline_cache_items
            ),
            "backfill_on_follow": reader.get(
                "BACKFILL_ON_FOLLOW", parse.non_negative_int, defaults.backfill_on_follow
            ),
            "rate_limit_per_token": reader.get(
                "RATE_LIMIT_PER_TOKEN", parse.non_negative_float, defaults.rate_limit_per_token
            ),
            "auth_failures_per_minute": reader.get(
                "AUTH_FAILURES_PER_MINUTE", parse.non_negative_int,
                defaults.auth_failures_per_minute,
            ),
            "active_days": reader.get("ACTIVE_DAYS", parse.positive_int, defaults.active_days),
            "timeline_max_items": reader.get(
                "TIMELINE_MAX_ITEMS", parse.positive_int, defaults.timeline_max_items
            ),
            "timeline_ttl_days": reader.get(
                "TIMELINE_TTL_DAYS", parse.positive_int, defaults.timeline_ttl_days
            ),
            "fanout_chunk_size": reader.get(
                "FANOUT_CHUNK_SIZE", parse.positive_int, defaults.fanout_chunk_size
            ),
            "fanout_deadline_seconds": reader.get(
                "FANOUT_DEADLINE_SECONDS", parse.positive_int, defaults.fanout_deadline_seconds
            ),
            "recommended_every": reader.get(
                "RECOMMENDED_EVERY", parse.non_negative_int, defaults.recommended_every
            ),
            "cursor_secret": reader.get("CURSOR_SECRET", parse.secret, ""),
            "cursor_ttl_seconds": reader.get(
                "CURSOR_TTL_SECONDS", parse.positive_int, defaults.cursor_ttl_seconds
            ),
            "ledger_ttl_days": reader.get(
                "LEDGER_TTL_DAYS", parse.positive_int, defaults.ledger_ttl_days
            ),
            "dynamodb_connect_timeout": reader.get(
                "DYNAMODB_CONNECT_TIMEOUT", parse.positive_float, defaults.dynamodb_connect_timeout
            ),
            "dynamodb_read_timeout": reader.get(
                "DYNAMODB_READ_TIMEOUT", parse.positive_float, defaults.dynamodb_read_timeout
            ),
            "dynamodb_max_attempts": reader.get(
                "DYNAMODB_MAX_ATTEMPTS", parse.positive_int, defaults.dynamodb_max_attempts
            ),
            "dynamodb_retry_mode": reader.get(
                "DYNAMODB_RETRY_MODE", parse.retry_mode, defaults.dynamodb_retry_mode
            ),
            "dynamodb_client": reader.get(
                "DYNAMODB_CLIENT", parse.dynamodb_client, defaults.dynamodb_client
            ),
            "dynamodb_pitr": reader.get("DYNAMODB_PITR", parse.flag, defaults.dynamodb_pitr),
            "dynamodb_concurrency": reader.get(
                "DYNAMODB_CONCURRENCY", parse.positive_int, defaults.dynamodb_concurrency
            ),
            "redis_timeout": reader.get(
                "REDIS_TIMEOUT", parse.positive_float, defaults.redis_timeout
            ),
            "api_timeout": reader.get("API_TIMEOUT", parse.positive_float, defaults.api_timeout),
            "api_max_in_flight": reader.get("API_MAX_IN_FLIGHT", parse.positive_int,
                                            defaults.api_max_in_flight),
            "api_request_timeout": reader.get(
                "API_REQUEST_TIMEOUT", parse.positive_float, defaults.api_request_timeout
            ),
            "job_max_tries": reader.get(
                "JOB_MAX_TRIES", parse.positive_int, defaults.job_max_tries
            ),
            "worker_max_jobs": reader.get(
                "WORKER_MAX_JOBS", parse.positive_int, defaults.worker_max_jobs
            ),
            "worker_metrics_port": reader.get(
                "WORKER_METRICS_PORT", parse.port, defaults.worker_metrics_port
            ),
            "worker_metrics_host": reader.get(
                "WORKER_METRICS_HOST", parse.host, defaults.worker_metrics_host
            ),
            "log_level": reader.get("LOG_LEVEL", parse.log_level, defaults.log_level),
            "log_json": reader.get("LOG_JSON", parse.flag, defaults.log_json),
            "notify_group_hours": reader.get(
                "NOTIFY_GROUP_HOURS", parse.positive_int, defaults.notify_group_hours
            ),
            "notify_ttl_days": reader.get(
                "NOTIFY_TTL_DAYS", parse.positive_int, defaults.notify_ttl_days
            ),
            "stream_max_per_process": reader.get(
                "STREAM_MAX_PER_PROCESS", parse.positive_int, defaults.stream_max_per_process
            ),
            "redis_sentinels": reader.get(
                "REDIS_SENTINELS", parse.sentinels, defaults.redis_sentinels
            ),
            "redis_sentinel_master": reader.get(
                "REDIS_SENTINEL_MASTER", parse.host, defaults.redis_sentinel_master
            ),
            "queue_min_replicas": reader.get(
                "QUEUE_MIN_REPLICAS", parse.non_negative_int, defaults.queue_min_replicas
            ),
            "queue_replica_timeout": reader.get(
                "QUEUE_REPLICA_TIMEOUT", parse.positive_float, defaults.queue_replica_timeout
            ),
            "regions": reader.get("REGIONS", parse.regions, parse.no_regions()),
            "weights": weights,
        }
        if bool(values["redis_sentinels"]) != bool(values["redis_sentinel_master"]):
            raise SettingsError(
                f"{PREFIX}REDIS_SENTINELS and {PREFIX}REDIS_SENTINEL_MASTER go together: "
                "set both or neither"
            )
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (derived defaults recomputed when not given)."""
        current = {f.name: getattr(self, f.name) for f in fields(self)}
        if (
            "api_tokens" in changes
            and "cursor_secret" not in changes
            and self.cursor_secret == _env_default_cursor_secret(self.api_tokens)
        ):
            current["cursor_secret"] = ""
        if (
            "redis_url" in changes
            and "cache_redis_url" not in changes
            and self.cache_redis_url == self.redis_url
        ):
            current["cache_redis_url"] = ""
        current.update(changes)
        return Settings(**current)


SECRET_NAMES = frozenset({"API_TOKENS", "CURSOR_SECRET"})


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def get(self, name: str, parse: Callable[[str], T], default: T) -> T:
        raw = self._env.get(PREFIX + name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return parse(raw.strip())
        except (ValueError, TypeError) as exc:
            # A secret's value never goes into an error message (they end up in logs).
            got = "" if name in SECRET_NAMES else f" (got {raw!r})"
            raise SettingsError(f"{PREFIX}{name}: {exc}{got}") from None
