"""AWS Signature Version 4 for DynamoDB's JSON protocol (one POST to ``/``).

The service signs thousands of small requests a second, so the parts that do not
change per request are computed once: the derived signing key per day, region and
secret, and the fixed header layout. What remains per request is two SHA-256
digests and one HMAC.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

__all__ = ["CONTENT_TYPE", "Credentials", "Signer", "amz_date"]

CONTENT_TYPE = "application/x-amz-json-1.0"
TARGET_PREFIX = "DynamoDB_20120810."
SERVICE = "dynamodb"
ALGORITHM = "AWS4-HMAC-SHA256"


@dataclass(frozen=True, slots=True)
class Credentials:
    """One frozen set of AWS credentials, as the signer uses them."""

    access_key: str
    secret_key: str
    token: str | None = None


def amz_date(epoch: float) -> str:
    """``YYYYMMDDTHHMMSSZ`` for a Unix time."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


class Signer:
    """Signs DynamoDB requests for one host and region."""

    def __init__(self, host: str, region: str) -> None:
        self.host = host
        self.region = region
        self._key_for: tuple[str, str] = ("", "")  # (day, secret) the cached key belongs to
        self._key = b""

    def signing_key(self, day: str, secret: str) -> bytes:
        """The derived key for one day; HMACs over the secret are redone only when
        the day or the secret changes."""
        if self._key_for != (day, secret):
            key = _hmac(("AWS4" + secret).encode(), day)
            for part in (self.region, SERVICE, "aws4_request"):
                key = _hmac(key, part)
            self._key, self._key_for = key, (day, secret)
        return self._key

    def headers(
        self, operation: str, body: bytes, credentials: Credentials, epoch: float
    ) -> dict[str, str]:
        """Every header the request needs, ``Authorization`` included."""
        stamp = amz_date(epoch)
        day = stamp[:8]
        target = TARGET_PREFIX + operation
        # Canonical headers: lower-case names in sorted order.
        signed = [("content-type", CONTENT_TYPE), ("host", self.host), ("x-amz-date", stamp)]
        if credentials.token:
            signed.append(("x-amz-security-token", credentials.token))
        signed.append(("x-amz-target", target))
        names = ";".join(name for name, _ in signed)
        canonical = "POST\n/\n\n{}\n{}\n{}".format(
            "".join(f"{name}:{value}\n" for name, value in signed),
            names,
            hashlib.sha256(body).hexdigest(),
        )
        scope = f"{day}/{self.region}/{SERVICE}/aws4_request"
        to_sign = f"{ALGORITHM}\n{stamp}\n{scope}\n" + hashlib.sha256(
            canonical.encode()
        ).hexdigest()
        signature = hmac.new(
            self.signing_key(day, credentials.secret_key), to_sign.encode(), hashlib.sha256
        ).hexdigest()
        headers = {
            "Content-Type": CONTENT_TYPE,
            "Host": self.host,
            "X-Amz-Date": stamp,
            "X-Amz-Target": target,
            "Authorization": f"{ALGORITHM} Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={names}, Signature={signature}",
        }
        if credentials.token:
            headers["X-Amz-Security-Token"] = credentials.token
        return headers


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()
