"""JSON responses, the contract's error body, and strict query/path parameters."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from feed.errors import ValidationFailed
from feed.events import ID_RULE, is_valid_id

__all__ = ["error", "error_body", "json", "path_id", "query_bool", "query_cursor", "query_limit"]


def json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json",
                    headers=headers)


def error_body(code: str, message: str, details: list[Any] | None = None) -> bytes:
    """``{"error": {"code", "message"[, "details"]}}``, the body of every error (the app's
    and the server's own refusals alike)."""
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return orjson.dumps({"error": body})


def error(status: int, code: str, message: str, *, details: list[Any] | None = None,
          headers: dict[str, str] | None = None) -> Response:
    return Response(error_body(code, message, details), status_code=status,
                    media_type="application/json", headers=headers)


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed([{"field": field, "message": message}])


def path_id(request: Request, name: str) -> str:
    """A user or koo id from the path, checked against the contract's alphabet."""
    value = request.path_params.get(name)
    if not is_valid_id(value):
        raise _invalid(name, f"{name} {ID_RULE}")
    assert isinstance(value, str)
    return value


def query_limit(request: Request, *, default: int, maximum: int) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 4 or not 1 <= int(raw) <= maximum:
        raise _invalid("limit", f"limit must be an integer from 1 to {maximum}")
    return int(raw)


def query_bool(request: Request, name: str) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return False
    lowered = raw.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise _invalid(name, f"{name} must be true or false")


def query_cursor(request: Request) -> str | None:
    raw = request.query_params.get("cursor")
    return raw or None
