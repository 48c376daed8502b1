"""Parsers of ``FEED_*`` values: each turns a raw string into a value, or raises
``ValueError`` with a sentence saying what the value must be."""

from __future__ import annotations


def positive_int(raw: str) -> int:
    value = int(raw.replace("_", ""))
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def non_negative_int(raw: str) -> int:
    value = int(raw.replace("_", ""))
    if value < 0:
        raise ValueError("must be zero or a positive integer")
    return value


def positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a positive number")
    return value


def non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0 or value == float("inf"):
        raise ValueError("must be zero or a positive number")
    return value


def port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number from 0 (off) to 65535")
    return value


def host(raw: str) -> str:
    if any(c.isspace() for c in raw):
        raise ValueError("must be a host name or address")
    return raw


def flag(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be true or false")


def redis_url(raw: str) -> str:
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must start with redis://, rediss:// or unix://")
    return raw


def sentinels(raw: str) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port``: the Sentinels that know the queue's primary."""
    found: list[tuple[str, int]] = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, number = part.rpartition(":")
        if not sep or not name or not number.isdigit() or not 0 < int(number) <= 65535:
            raise ValueError(f"entry {part!r} must be host:port")
        found.append((host(name.strip("[]")), int(number)))
    if not found:
        raise ValueError("must list at least one host:port")
    return tuple(found)


def http_url(raw: str) -> str:
    if not raw.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return raw.rstrip("/")


def region(raw: str) -> str:
    parts = raw.split("-")
    if len(parts) < 3 or not all((p.isalnum() and p.islower()) or p.isdigit() for p in parts):
        raise ValueError("must look like an AWS region, e.g. ap-south-1")
    return raw


def table_prefix(raw: str) -> str:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
    if len(raw) > 64 or not set(raw) <= allowed:
        raise ValueError("may hold only letters, digits, '_', '.', '-' (64 at most)")
    return raw


def tokens(raw: str) -> tuple[str, ...]:
    tokens = tuple(t.strip() for t in raw.split(",") if t.strip())
    for token in tokens:
        if len(token) < 8:
            raise ValueError("every token must be at least 8 characters")
        if any(c.isspace() for c in token):
            raise ValueError("tokens may not contain white space")
    return tokens


def secret(raw: str) -> str:
    if len(raw) < 16:
        raise ValueError("must be at least 16 characters")
    return raw


def retry_mode(raw: str) -> str:
    if raw not in {"standard", "adaptive"}:
        raise ValueError("must be 'standard' or 'adaptive'")
    return raw


def dynamodb_client(raw: str) -> str:
    if raw not in {"direct", "aioboto3"}:
        raise ValueError("must be 'direct' or 'aioboto3'")
    return raw


def log_level(raw: str) -> str:
    level = raw.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return level


def no_regions() -> dict[str, tuple[str | None, str]]:
    return {}


def regions(raw: str) -> dict[str, tuple[str | None, str]]:
    """``region=endpoint|table_prefix`` pairs, comma-separated.

    ``ap-south-1=http://127.0.0.1:8000,eu-west-1=`` maps each home region to the
    DynamoDB endpoint (empty: the AWS default for that region) holding its users.
    An optional ``|prefix`` after the endpoint overrides the table prefix.
    """
    regions: dict[str, tuple[str | None, str]] = {}
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, target = part.partition("=")
        if not sep:
            raise ValueError(f"entry {part!r} must be region=endpoint")
        region(name.strip())
        endpoint, _, prefix = target.partition("|")
        endpoint = endpoint.strip()
        prefix = prefix.strip()
        regions[name.strip()] = (
            http_url(endpoint) if endpoint else None,
            table_prefix(prefix) if prefix else "",
        )
    return regions
