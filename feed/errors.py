"""The project's exception types: one root, and the one place AWS and Redis errors map in."""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConditionFailed",
    "CredentialsRejected",
    "FeedError",
    "NotFound",
    "NotReady",
    "QueueNotReplicated",
    "RetriesExhausted",
    "StorageError",
    "StorageUnavailable",
    "TransactionCancelled",
    "Unapplicable",
    "ValidationFailed",
    "from_client_error",
    "from_error_response",
]


class FeedError(Exception):
    """Root of every error raised by the service."""


class ValidationFailed(FeedError):
    """Input (an event, an id, a query parameter) breaks the API's rules."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        first = errors[0]["message"] if errors else "invalid input"
        super().__init__(first if len(errors) <= 1 else f"{len(errors)} errors; first: {first}")


class NotFound(FeedError):
    """The user or koo does not exist (or the koo is deleted)."""


class StorageError(FeedError):
    """DynamoDB refused a request in a way retrying will not fix."""

    def __init__(self, message: str, code: str = "") -> None:
        self.code = code
        super().__init__(message)


class StorageUnavailable(StorageError):
    """DynamoDB or Redis did not answer, or asked us to slow down: worth retrying later."""


class CacheUnavailable(StorageUnavailable):
    """The hot cache's Redis did not answer (or was skipped after failing a moment ago)."""


class QueueNotReplicated(StorageUnavailable):
    """A batch reached the queue's primary but not FEED_QUEUE_MIN_REPLICAS replicas in
    time: not acknowledged (it may still run; producers retry, events are idempotent)."""

    def __init__(self, message: str, acknowledged: int, required: int) -> None:
        self.acknowledged = acknowledged
        self.required = required
        super().__init__(message, "QueueNotReplicated")


class RetriesExhausted(StorageUnavailable):
    """A batch kept coming back unprocessed after every retry."""


class CredentialsRejected(StorageError):
    """DynamoDB refused the credentials (unknown key, bad signature, no permission):
    retrying will not help; the message names where the credentials came from."""


class ConditionFailed(StorageError):
    """A conditional write found the item in another state."""


class TransactionCancelled(StorageError):
    """A transaction was cancelled; ``reasons`` holds one code per item ("None" if fine)."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons
        super().__init__(f"transaction cancelled: {reasons}", "TransactionCanceledException")


# Error codes that mean "try again later" rather than "this request is wrong".
RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionConflictException",
        "TransactionInProgressException",
        "LimitExceededException",
    }
)


# Per-item reasons of a cancelled transaction that mean "try again later".
RETRYABLE_REASONS = frozenset(
    {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded",
     "RequestLimitExceeded", "InternalServerError"}
)


# Error codes that mean "these credentials are wrong, or not allowed to do this".
CREDENTIAL_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "IncompleteSignatureException",
        "MissingAuthenticationTokenException",
        "InvalidClientTokenId",
        "ExpiredTokenException",
        "AccessDeniedException",
    }
)


def from_client_error(exc: Any, *, credentials: str = "") -> StorageError:
    """Map a botocore ``ClientError`` to the project's own type."""
    response = getattr(exc, "response", {}) or {}
    error = response.get("Error", {})
    reasons = response.get("CancellationReasons")
    mapped = from_error_response(
        str(error.get("Code", "")),
        str(error.get("Message", "")) or str(exc),
        [str(r.get("Code", "None")) for r in reasons] if reasons else None,
        credentials=credentials,
    )
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if isinstance(status, int) and status >= 500 and not isinstance(mapped, StorageUnavailable):
        return StorageUnavailable(str(mapped), mapped.code)  # a server's failure, transient
    return mapped


def from_error_response(
    code: str, message: str, reasons: list[str] | None = None, *, credentials: str = ""
) -> StorageError:
    """Map a DynamoDB error (its code, message and a cancelled transaction's reasons)
    to the project's own type; ``credentials`` says where the client's credentials came
    from, for the message of a refused one."""
    if code == "ConditionalCheckFailedException":
        return ConditionFailed(message, code)
    if code == "TransactionCanceledException":
        reasons = reasons or _reasons_from_message(message)
        if any(r in RETRYABLE_REASONS or r in RETRYABLE_CODES for r in reasons):
            return StorageUnavailable(message, "TransactionConflictException")
        return TransactionCancelled(reasons)
    if code in RETRYABLE_CODES:
        return StorageUnavailable(message, code)
    if code in CREDENTIAL_CODES:
        source = f" (credentials from {credentials})" if credentials else ""
        return CredentialsRejected(f"DynamoDB refused the request{source}: {code}: {message}",
                                   code)
    return StorageError(f"{code}: {message}" if code else message, code)


def _reasons_from_message(message: str) -> list[str]:
    # Some emulators put the reasons only in the message: "... [None, ConditionalCheckFailed]"
    start, end = message.find("["), message.rfind("]")
    if start < 0 or end < start:
        return []
    return [part.strip() for part in message[start + 1 : end].split(",")]


class NotReady(FeedError):
    """An event refers to something not stored yet (events may arrive out of order):
    retry later; dead-letter if it never appears."""


class Unapplicable(FeedError):
    """An event passed validation but can never apply (e.g. a delete by someone who is
    not the author): it goes to the dead-letter table with this reason."""
