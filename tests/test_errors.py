"""Unit tests of feed/errors.py: the one place botocore errors map to the project's types."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from feed.errors import (
    ConditionFailed,
    CredentialsRejected,
    FeedError,
    NotFound,
    NotReady,
    RetriesExhausted,
    StorageError,
    StorageUnavailable,
    TransactionCancelled,
    Unapplicable,
    ValidationFailed,
    from_client_error,
)

EMULATOR_MESSAGE = ("Transaction cancelled, please refer cancellation reasons for specific "
                    "reasons [None, ConditionalCheckFailed]")


def client_error(code: str, message: str | None = "boom", operation: str = "PutItem",
                 reasons: list[dict[str, Any]] | None = None) -> ClientError:
    error: dict[str, Any] = {"Code": code}
    if message is not None:
        error["Message"] = message
    response: dict[str, Any] = {"Error": error}
    if reasons is not None:
        response["CancellationReasons"] = reasons
    return ClientError(response, operation)  # type: ignore[arg-type]


def test_conditional_check_failed() -> None:
    err = from_client_error(client_error("ConditionalCheckFailedException", "nope"))
    assert type(err) is ConditionFailed
    assert err.code == "ConditionalCheckFailedException"
    assert str(err) == "nope"


@pytest.mark.parametrize("code", [
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionConflictException",
    "TransactionInProgressException",
    "LimitExceededException",
])
def test_retryable_codes_become_storage_unavailable(code: str) -> None:
    err = from_client_error(client_error(code, "slow down"))
    assert type(err) is StorageUnavailable
    assert err.code == code
    assert str(err) == "slow down"


def test_transaction_cancelled_with_reasons() -> None:
    exc = client_error("TransactionCanceledException", EMULATOR_MESSAGE, "TransactWriteItems",
                       reasons=[{"Code": "None"},
                                {"Code": "ConditionalCheckFailed", "Message": "failed"},
                                {"Code": "None"}])
    err = from_client_error(exc)
    assert type(err) is TransactionCancelled
    assert err.reasons == ["None", "ConditionalCheckFailed", "None"]
    assert err.code == "TransactionCanceledException"


def test_transaction_reason_without_code_counts_as_none() -> None:
    exc = client_error("TransactionCanceledException", "cancelled",
                       reasons=[{}, {"Code": "ConditionalCheckFailed"}])
    err = from_client_error(exc)
    assert isinstance(err, TransactionCancelled)
    assert err.reasons == ["None", "ConditionalCheckFailed"]


def test_transaction_reasons_parsed_from_message() -> None:
    err = from_client_error(client_error("TransactionCanceledException", EMULATOR_MESSAGE))
    assert type(err) is TransactionCancelled
    assert err.reasons == ["None", "ConditionalCheckFailed"]


def test_transaction_reasons_in_message_only_used_without_structured_reasons() -> None:
    exc = client_error("TransactionCanceledException", EMULATOR_MESSAGE,
                       reasons=[{"Code": "ConditionalCheckFailed"}, {"Code": "None"}])
    assert from_client_error(exc).reasons == [  # type: ignore[attr-defined]
        "ConditionalCheckFailed", "None"]


def test_transaction_without_any_reasons() -> None:
    err = from_client_error(client_error("TransactionCanceledException", "cancelled"))
    assert type(err) is TransactionCancelled
    assert err.reasons == []


def test_transaction_conflict_exception_reason_in_message_is_retryable() -> None:
    message = "Transaction cancelled [None, TransactionConflictException]"
    err = from_client_error(client_error("TransactionCanceledException", message))
    assert type(err) is StorageUnavailable


# DynamoDB's CancellationReason codes are "TransactionConflict", "ThrottlingError" and
# "ProvisionedThroughputExceeded" (see botocore's dynamodb service-2.json, documentation of
# TransactionCanceledException) -- not the "...Exception" names of the top-level errors.
TRANSIENT_REASONS = ["TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"]


@pytest.mark.parametrize("reason", TRANSIENT_REASONS)
def test_transient_cancellation_reason_is_retryable(reason: str) -> None:
    exc = client_error("TransactionCanceledException", "cancelled", "TransactWriteItems",
                       reasons=[{"Code": "None"}, {"Code": reason}])
    err = from_client_error(exc)
    assert type(err) is StorageUnavailable
    assert not isinstance(err, TransactionCancelled)


@pytest.mark.parametrize("reason", TRANSIENT_REASONS)
def test_transient_cancellation_reason_in_message_is_retryable(reason: str) -> None:
    message = f"Transaction cancelled, please refer cancellation reasons [{reason}, None]"
    err = from_client_error(client_error("TransactionCanceledException", message))
    assert type(err) is StorageUnavailable


@pytest.mark.parametrize("code", ["ValidationException", "ResourceNotFoundException",
                                  "SomethingNew"])
def test_unknown_codes_become_storage_error(code: str) -> None:
    err = from_client_error(client_error(code, "bad request"))
    assert type(err) is StorageError
    assert err.code == code
    assert str(err) == f"{code}: bad request"


@pytest.mark.parametrize("code", ["AccessDeniedException", "UnrecognizedClientException",
                                  "InvalidSignatureException", "ExpiredTokenException"])
def test_refused_credentials_are_their_own_error_naming_the_source(code: str) -> None:
    err = from_client_error(client_error(code, "no"), credentials="env, key …AB12")
    assert type(err) is CredentialsRejected
    assert not isinstance(err, StorageUnavailable)  # retrying will not fix it
    assert err.code == code
    assert str(err) == f"DynamoDB refused the request (credentials from env, key …AB12): {code}: no"


def test_a_5xx_answer_is_transient_whatever_its_code() -> None:
    # Only the status of the metadata, not every key botocore's response type lists.
    response: Any = {"Error": {"Code": "502", "Message": "Bad Gateway"},
                     "ResponseMetadata": {"HTTPStatusCode": 502}}
    error = ClientError(response, "GetItem")
    assert isinstance(from_client_error(error), StorageUnavailable)


def test_missing_message_falls_back_to_the_exception_text() -> None:
    err = from_client_error(client_error("ValidationException", None, "Query"))
    assert type(err) is StorageError
    assert "ValidationException" in str(err)
    assert "Query" in str(err)


def test_no_code_at_all() -> None:
    err = from_client_error(ClientError({"Error": {"Message": "weird"}}, "Scan"))
    assert type(err) is StorageError
    assert (err.code, str(err)) == ("", "weird")


def test_non_client_error_object() -> None:
    err = from_client_error(RuntimeError("not from botocore"))
    assert type(err) is StorageError
    assert str(err) == "not from botocore"


def test_hierarchy() -> None:
    assert issubclass(RetriesExhausted, StorageUnavailable)
    for cls in (StorageUnavailable, ConditionFailed, TransactionCancelled):
        assert issubclass(cls, StorageError)
    for root in (StorageError, ValidationFailed, NotFound, NotReady, Unapplicable):
        assert issubclass(root, FeedError)
    assert not issubclass(ConditionFailed, StorageUnavailable)
    assert not issubclass(TransactionCancelled, StorageUnavailable)


def test_validation_failed_message() -> None:
    one = ValidationFailed([{"field": "a", "message": "a is bad"}])
    assert str(one) == "a is bad"
    assert one.errors == [{"field": "a", "message": "a is bad"}]
    two = ValidationFailed([{"message": "first"}, {"message": "second"}])
    assert str(two) == "2 errors; first: first"


def test_validation_failed_without_errors_message() -> None:
    assert str(ValidationFailed([])) == "invalid input"
