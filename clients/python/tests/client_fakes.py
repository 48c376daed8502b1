"""Stand-ins the unit tests share: a fake clock, a recording handler, canned answers."""

from __future__ import annotations

from typing import Any

import httpx

TOKEN = "client-test-token-0123"


class FakeTime:
    """A clock that moves only when the client sleeps (or a handler moves it), so the
    tests of waits and deadlines take no time and are exact."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Recorder:
    """Answers each request with the next of ``answers`` (the last one repeats) and keeps
    every request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        assert answers
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def error(status: int, code: str, message: str = "no", *, headers: dict[str, str] | None = None,
          details: list[dict[str, Any]] | None = None) -> httpx.Response:
    """An error answer with the service's body."""
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return httpx.Response(status, json={"error": body}, headers=headers)


def koo_json(koo_id: str = "tour-koo", **extra: Any) -> dict[str, Any]:
    """A koo as the API answers it (the API reference's example)."""
    return {"koo_id": koo_id, "author_id": "user0042", "text": "namaste", "lang": "hi",
            "created_at": 1764150000000, "hashtags": ["koo"], "reply_to": None,
            "rekoo_of": None, "likes": 1, "rekoos": 0, "comments": 0, **extra}
