"""A stand-in DynamoDB endpoint that checks what the emulators do not: signatures,
credential expiry and the signing time, and can answer badly on purpose.

Signatures are recomputed with botocore's own SigV4 code from the headers the request
says it signed, so the client's signer is checked against an independent one.
Requests that pass are answered as an empty GetItem (``{}``) unless ``mode`` says
otherwise.
"""

from __future__ import annotations

import calendar
import email.utils
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

REGION = "ap-south-1"
SKEW_LIMIT = 300.0  # DynamoDB refuses a signing time more than 5 minutes off


@dataclass
class Key:
    secret: str
    token: str | None = None
    expires: float | None = None  # server clock; None: never


@dataclass
class StrictDynamo:
    """State of the stand-in; tests change it between requests."""

    keys: dict[str, Key] = field(default_factory=dict)
    clock_offset: float = 0.0  # the server's clock minus the real one
    mode: str = "ok"  # ok | not_json | truncated | bad_crc | html_500 | throttle
    seen: list[dict[str, Any]] = field(default_factory=list)  # accepted requests
    refused: list[str] = field(default_factory=list)  # error codes given
    url: str = ""

    def now(self) -> float:
        return time.time() + self.clock_offset

    def refuse(self, code: str, message: str) -> web.Response:
        self.refused.append(code)
        body = orjson.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}",
                             "message": message})
        return web.Response(status=400, body=body, headers={
            "Content-Type": "application/x-amz-json-1.0",
            "Date": email.utils.formatdate(self.now(), usegmt=True),
        })

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        auth = request.headers.get("Authorization", "")
        try:
            fields = dict(part.strip().split("=", 1) for part in
                          auth.removeprefix("AWS4-HMAC-SHA256 ").split(","))
            access_key, _day, region, _service, _ = fields["Credential"].split("/")
            signed_headers = fields["SignedHeaders"].split(";")
            signature = fields["Signature"]
        except (KeyError, ValueError):
            return self.refuse("MissingAuthenticationTokenException", "no valid Authorization")
        key = self.keys.get(access_key)
        if key is None:
            return self.refuse("UnrecognizedClientException",
                               "The security token included in the request is invalid.")
        stamp = request.headers.get("X-Amz-Date", "")
        signed_at = calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ"))
        if abs(signed_at - self.now()) > SKEW_LIMIT:
            return self.refuse("InvalidSignatureException",
                               f"Signature expired: {stamp} is now earlier than the time "
                               "allowed (5 minutes ago)")
        if key.expires is not None and self.now() >= key.expires:
            return self.refuse("ExpiredTokenException", "The security token has expired.")
        if key.token and request.headers.get("X-Amz-Security-Token") != key.token:
            return self.refuse("UnrecognizedClientException", "wrong session token")
        if signature != _expected_signature(request, body, signed_headers, key, access_key,
                                            stamp, region):
            return self.refuse("InvalidSignatureException",
                               "The request signature we calculated does not match")
        self.seen.append({"access_key": access_key,
                          "target": request.headers.get("X-Amz-Target"),
                          "body": orjson.loads(body)})
        return await self._answer(request)

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        headers = {"Content-Type": "application/x-amz-json-1.0"}
        good = b"{}"
        if self.mode == "throttle":
            return self.refuse("ProvisionedThroughputExceededException", "slow down (test)")
        if self.mode == "not_json":
            return web.Response(status=200, body=b"<html>proxy error</html>", headers=headers)
        if self.mode == "html_500":
            return web.Response(status=502, body=b"<html>Bad Gateway</html>", headers=headers)
        if self.mode == "bad_crc":
            headers["x-amz-crc32"] = str(zlib.crc32(good) ^ 1)
            return web.Response(status=200, body=good, headers=headers)
        if self.mode == "truncated":
            whole = orjson.dumps({"Item": {"user_id": {"S": "x" * 100}}})
            response = web.StreamResponse(status=200, headers={
                **headers, "Content-Length": str(len(whole))})
            await response.prepare(request)
            await response.write(whole[: len(whole) // 2])
            assert request.transport is not None
            request.transport.close()
            return response
        headers["x-amz-crc32"] = str(zlib.crc32(good))
        return web.Response(status=200, body=good, headers=headers)


def _expected_signature(request: web.Request, body: bytes, signed_headers: list[str],
                        key: Key, access_key: str, stamp: str, region: str) -> str:
    aws = AWSRequest(method="POST", url=f"http://{request.host}/", data=body,
                     headers={name: request.headers.get(name, "") for name in signed_headers})
    aws.context["timestamp"] = stamp
    signer = SigV4Auth(Credentials(access_key, key.secret, key.token), "dynamodb", region)
    canonical = signer.canonical_request(aws)
    return str(signer.signature(signer.string_to_sign(aws, canonical), aws))


async def serve(state: StrictDynamo) -> AsyncIterator[StrictDynamo]:
    """Run the stand-in on a free loopback port for the length of the iteration."""
    app = web.Application()
    app.router.add_post("/", state.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    addresses = runner.addresses
    assert addresses
    port = addresses[0][1]
    state.url = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        await runner.cleanup()
