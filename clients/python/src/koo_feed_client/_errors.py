"""What the client raises: one base class, and one subclass per answer a caller acts on."""

from __future__ import annotations

import httpx

from koo_feed_client._models import ErrorDetail, as_object

__all__ = [
    "ClientError",
    "InvalidCursor",
    "InvalidRequest",
    "NotFound",
    "RateLimited",
    "Unauthorized",
    "Unavailable",
    "error_from_response",
    "retry_after_seconds",
]


class ClientError(Exception):
    """Base of everything the client raises. ``status`` and ``code`` are the answer's HTTP
    status and error code, None when there was no answer (or no error body)."""

    def __init__(self, message: str, *, status: int | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class NotFound(ClientError):
    """404: an unknown user, an unknown or deleted koo."""


class Unauthorized(ClientError):
    """401: the token is missing or not one the service accepts."""


class InvalidRequest(ClientError):
    """400 or 422: the service refused the request as it is; sending it again will not
    help. ``details`` has one entry per bad parameter, or per bad event of a batch."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 details: tuple[ErrorDetail, ...] = ()) -> None:
        super().__init__(message, status=status, code=code)
        self.details = details


class InvalidCursor(InvalidRequest):
    """400 ``invalid_cursor``: the cursor expired, was altered, or belongs to another list;
    start again from the first page."""


class RateLimited(ClientError):
    """429 until the call's deadline ran out. ``retry_after`` is the last wait the service
    asked for, in seconds."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message, status=status, code=code)
        self.retry_after = retry_after


class Unavailable(ClientError):
    """The service did not answer usefully before the call's deadline: 503s, connection
    errors or no answer at all (``status`` is then None). ``retry_after`` as for
    :class:`RateLimited`."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message, status=status, code=code)
        self.retry_after = retry_after


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """``Retry-After`` in seconds, or None when absent or not a number of seconds."""
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw.strip())
    except ValueError:
        return None
    return seconds if 0 <= seconds < float("inf") else None


def _error_body(response: httpx.Response) -> tuple[str | None, str, tuple[ErrorDetail, ...]]:
    """The code, message and details of the service's error body; for any other body (a
    proxy's page, say) no code and the start of the text."""
    try:
        error = as_object(as_object(response.json(), "the body").get("error"), "error")
        code, message = error.get("code"), error.get("message")
        if not isinstance(code, str) or not isinstance(message, str):
            raise ValueError("not the error body")
        raw = error.get("details")
        details = tuple(ErrorDetail.from_json(as_object(d, "a detail"))
                        for d in (raw if isinstance(raw, list) else ()))
    except ValueError:  # json.JSONDecodeError is one
        text = response.text.strip()[:200] or response.reason_phrase
        return None, f"HTTP {response.status_code}: {text}", ()
    return code, message, details


def error_from_response(response: httpx.Response) -> ClientError:
    """The exception an error answer (status 400 or above) stands for."""
    status = response.status_code
    code, message, details = _error_body(response)
    if status == 400 and code == "invalid_cursor":
        return InvalidCursor(message, status=status, code=code, details=details)
    if status in (400, 422):
        return InvalidRequest(message, status=status, code=code, details=details)
    if status == 401:
        return Unauthorized(message, status=status, code=code)
    if status == 404:
        return NotFound(message, status=status, code=code)
    if status == 429:
        return RateLimited(message, status=status, code=code,
                           retry_after=retry_after_seconds(response.headers))
    if status == 503:
        return Unavailable(message, status=status, code=code,
                           retry_after=retry_after_seconds(response.headers))
    return ClientError(message, status=status, code=code)
