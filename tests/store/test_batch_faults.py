"""Batch writes and reads under injected faults: unprocessed items, throttling, backoff.

Faults are injected on the client side (botocore event hooks, see ``_faults``),
so they reach :class:`feed.store.Dynamo` exactly as DynamoDB's own answers
would, on every backend.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, field

import pytest

from config.tables import TIMELINES
from feed.errors import RetriesExhausted, StorageUnavailable
from feed.store import Backoff, Dynamo
from tests.conftest import uid
from tests.store._faults import BatchFaults, CallCounter

pytestmark = pytest.mark.fault

ITEMS = 1_000


def rows(reader: str, count: int = ITEMS) -> list[dict[str, object]]:
    return [{"reader_id": reader, "sk": f"{i:05d}", "koo_id": f"k{i}", "author_id": "a"}
            for i in range(count)]


async def stored(db: Dynamo, reader: str) -> dict[str, str]:
    """sk -> koo_id of every row of ``reader``, read back with a consistent Query."""
    found: dict[str, str] = {}
    async for item in db.query(TIMELINES, "reader_id = :r",
                               values={":r": {"S": reader}}, consistent=True,
                               page_size=500):
        assert item["sk"] not in found, f"{item['sk']} returned twice"
        found[item["sk"]] = item["koo_id"]
    return found


@dataclass(frozen=True)
class RecordingBackoff(Backoff):
    """The same policy, remembering every (attempt, delay) it hands out."""

    delays: list[tuple[int, float]] = field(default_factory=list, compare=False)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        value = super().delay(attempt, rng)
        self.delays.append((attempt, value))
        return value


async def test_every_item_lands_despite_unprocessed_items_and_throttling(db: Dynamo) -> None:
    reader = uid("r")
    db.backoff = RecordingBackoff()
    with BatchFaults(db, unprocessed=0.4, throttle=0.1, seed=7,
                     max_faults_per_item=4) as faults:
        written = await db.batch_write(TIMELINES, puts=rows(reader))
    assert written == ITEMS
    # The faults really happened, in roughly the asked-for proportions.
    assert faults.calls >= ITEMS // 25
    assert faults.unprocessed_answers >= 0.2 * faults.calls
    assert faults.throttled >= 1
    assert faults.withheld_items > 0
    assert len(db.backoff.delays) == faults.unprocessed_answers + faults.throttled
    assert await stored(db, reader) == {f"{i:05d}": f"k{i}" for i in range(ITEMS)}


async def test_deletes_land_despite_faults(db: Dynamo) -> None:
    reader = uid("r")
    await db.batch_write(TIMELINES, puts=rows(reader, 300))
    doomed = [{"reader_id": reader, "sk": f"{i:05d}"} for i in range(0, 300, 2)]
    with BatchFaults(db, unprocessed=0.4, throttle=0.1, seed=11,
                     max_faults_per_item=4) as faults:
        assert await db.batch_write(TIMELINES, deletes=doomed) == len(doomed)
    assert faults.unprocessed_answers + faults.throttled > 0
    assert sorted(await stored(db, reader)) == [f"{i:05d}" for i in range(1, 300, 2)]


async def test_batch_get_returns_each_item_once_despite_unprocessed_keys(db: Dynamo) -> None:
    reader = uid("r")
    await db.batch_write(TIMELINES, puts=rows(reader, 450))
    keys = [{"reader_id": reader, "sk": f"{i:05d}"} for i in range(500)]  # 50 missing
    with BatchFaults(db, "BatchGetItem", unprocessed=0.5, throttle=0.1, seed=3,
                     max_faults_per_item=4) as faults:
        items = await db.batch_get(TIMELINES, keys, consistent=True,
                                   attributes=["reader_id", "sk", "koo_id"])
    assert faults.unprocessed_answers + faults.throttled > 0
    assert sorted(i["sk"] for i in items) == [f"{i:05d}" for i in range(450)]
    assert all(set(i) == {"reader_id", "sk", "koo_id"} for i in items)  # projection kept


def test_backoff_delay_is_capped_exponential_and_jittered() -> None:
    policy = Backoff(base=0.025, cap=1.0, attempts=10)
    rng = random.Random(1)
    for attempt in range(16):
        ceiling = min(policy.cap, policy.base * 2**attempt)
        samples = [policy.delay(attempt, rng) for _ in range(2_000)]
        assert all(0 <= s <= ceiling <= policy.cap for s in samples), attempt
        # Full jitter: spread over the whole [0, ceiling) range, not a constant.
        assert len(set(samples)) > 1_900
        assert 0.4 * ceiling < statistics.fmean(samples) < 0.6 * ceiling
        assert max(samples) > 0.9 * ceiling
        assert min(samples) < 0.1 * ceiling
    # The ceiling grows exponentially until the cap, then stays there.
    assert min(policy.cap, policy.base * 2**3) == pytest.approx(0.2)
    assert all(policy.delay(a, rng) <= policy.cap for a in range(6, 64))


async def test_faulty_write_costs_at_most_three_times_the_calls(db: Dynamo) -> None:
    with CallCounter(db, "BatchWriteItem") as clean:
        await db.batch_write(TIMELINES, puts=rows(uid("r")))
    assert clean.calls == ITEMS // 25

    reader = uid("r")
    db.backoff = RecordingBackoff()
    with BatchFaults(db, unprocessed=0.4, throttle=0.1, seed=5,
                     max_faults_per_item=4) as faults:
        await db.batch_write(TIMELINES, puts=rows(reader))
    assert len(await stored(db, reader)) == ITEMS
    assert clean.calls < faults.calls <= 3 * clean.calls
    delays = db.backoff.delays
    assert delays, "faults were injected but nothing backed off"
    assert all(0 <= d <= min(db.backoff.cap, db.backoff.base * 2**a) for a, d in delays)
    assert len({d for _, d in delays}) > len(delays) // 2, "delays are not jittered"


async def test_unprocessed_forever_raises_retries_exhausted_naming_the_table(
    db: Dynamo,
) -> None:
    db.backoff = Backoff(base=0.001, cap=0.005, attempts=3)
    with BatchFaults(db, unprocessed=1.0, seed=1) as faults, \
            pytest.raises(RetriesExhausted) as caught:
        await db.batch_write(TIMELINES, puts=rows(uid("r"), 25))
    assert faults.calls == db.backoff.attempts + 1
    assert db.table(TIMELINES) in str(caught.value)
    assert "unprocessed" in str(caught.value)
    assert isinstance(caught.value, StorageUnavailable)  # the workers retry it later


async def test_batch_get_unprocessed_forever_raises_retries_exhausted(db: Dynamo) -> None:
    db.backoff = Backoff(base=0.001, cap=0.005, attempts=3)
    keys = [{"reader_id": uid("r"), "sk": "1"} for _ in range(10)]
    with BatchFaults(db, "BatchGetItem", unprocessed=1.0, seed=1) as faults, \
            pytest.raises(RetriesExhausted) as caught:
        await db.batch_get(TIMELINES, keys)
    assert faults.calls == db.backoff.attempts + 1
    assert db.table(TIMELINES) in str(caught.value)


async def test_throttled_forever_raises_retries_exhausted_naming_the_table(
    db: Dynamo,
) -> None:
    db.backoff = Backoff(base=0.001, cap=0.005, attempts=3)
    with BatchFaults(db, throttle=1.0, seed=1) as faults, \
            pytest.raises(RetriesExhausted) as caught:
        await db.batch_write(TIMELINES, puts=rows(uid("r"), 25))
    assert faults.calls == db.backoff.attempts + 1
    assert caught.value.code == "ProvisionedThroughputExceededException"
    assert db.table(TIMELINES) in str(caught.value)
