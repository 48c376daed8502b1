"""``Signer``: the same signature as botocore's SigV4 for every DynamoDB request."""

from __future__ import annotations

import datetime
from unittest import mock

import botocore.auth
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from hypothesis import given, settings
from hypothesis import strategies as st

from feed.store._sigv4 import Credentials, Signer

EPOCH = 1_780_000_000.25  # 2026-05-28


def botocore_authorization(host: str, region: str, operation: str, body: bytes,
                           credentials: Credentials, epoch: float) -> str:
    """botocore's Authorization header for the same request, signed at the same time."""
    request = AWSRequest(method="POST", url=f"http://{host}/", data=body, headers={
        "Content-Type": "application/x-amz-json-1.0",
        "X-Amz-Target": f"DynamoDB_20120810.{operation}",
        "Host": host,
    })
    at = datetime.datetime.fromtimestamp(epoch, datetime.UTC).replace(tzinfo=None)
    boto = BotoCredentials(credentials.access_key, credentials.secret_key, credentials.token)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=at):
        SigV4Auth(boto, "dynamodb", region).add_auth(request)
    return str(request.headers["Authorization"])


@settings(max_examples=60, deadline=None)
@given(
    body=st.binary(max_size=2_000),
    operation=st.sampled_from(["GetItem", "Query", "BatchWriteItem", "TransactWriteItems"]),
    token=st.none() | st.text("abcdefXYZ0123456789+/=", min_size=1, max_size=40),
    host=st.sampled_from(["127.0.0.1:8765", "dynamodb.ap-south-1.amazonaws.com",
                          "localhost:8000"]),
    offset=st.integers(min_value=0, max_value=400 * 86_400),
)
def test_the_signature_is_botocores(body: bytes, operation: str, token: str | None,
                                    host: str, offset: int) -> None:
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    epoch = EPOCH + offset
    headers = Signer(host, "ap-south-1").headers(operation, body, credentials, epoch)
    assert headers["Authorization"] == botocore_authorization(
        host, "ap-south-1", operation, body, credentials, epoch)
    assert ("X-Amz-Security-Token" in headers) == bool(token)


def test_the_signing_key_is_derived_once_a_day_and_per_secret() -> None:
    signer = Signer("127.0.0.1:8765", "eu-west-1")
    first = signer.signing_key("20261206", "secret")
    assert signer.signing_key("20261206", "secret") is first
    assert signer.signing_key("20261207", "secret") != first
    assert signer.signing_key("20261207", "other") != signer.signing_key("20261207", "secret")


def test_a_cached_key_still_signs_like_botocore_across_midnight() -> None:
    signer = Signer("127.0.0.1:8765", "ap-south-1")
    credentials = Credentials("AKID", "secret")
    midnight = 1_780_012_800.0  # 2026-05-29T00:00:00Z
    for epoch in (midnight - 1, midnight, midnight + 1):
        assert signer.headers("GetItem", b"{}", credentials, epoch)["Authorization"] == (
            botocore_authorization("127.0.0.1:8765", "ap-south-1", "GetItem", b"{}",
                                   credentials, epoch))
