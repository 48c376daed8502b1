"""Fixtures of the data-layer tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from config.settings import Settings
from feed.store import Dynamo, open_dynamo
from tests.conftest import BACKEND
from tests.store._moto import serialize_moto_dynamodb


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Dynamo]:
    """A DynamoDB client of the test's own (session tables), so event hooks and backoff
    changes made by a test never leak into another one."""
    async with open_dynamo(settings) as client:
        yield client


@pytest.fixture(scope="session", autouse=True)
def _atomic_moto() -> None:
    """moto only: one DynamoDB request at a time (see tests/store/_moto.py)."""
    if BACKEND == "moto":
        serialize_moto_dynamodb()
