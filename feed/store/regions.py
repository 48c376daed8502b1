"""Data residency: one DynamoDB client per home region that keeps its users' profiles.

``FEED_REGIONS`` maps a home region to the endpoint (and optionally the table prefix)
whose ``users`` table holds the profiles of the users who signed up there. A region
not in the map, or mapped to the service's own endpoint and prefix, keeps its
profiles in the service's own ``users`` table.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from config.settings import Settings
from config.tables import REGIONAL_DATASETS
from feed.store._dynamo import Dynamo, open_dynamo
from feed.store.tables import create_tables

__all__ = ["create_regional_tables", "open_regions", "regional_targets"]


def regional_targets(settings: Settings) -> dict[str, tuple[str | None, str]]:
    """(endpoint, table prefix) of every region whose profiles live away from home."""
    targets: dict[str, tuple[str | None, str]] = {}
    for region, (endpoint, prefix) in settings.regions.items():
        prefix = prefix or settings.table_prefix
        same_endpoint = endpoint == settings.dynamodb_endpoint and (
            endpoint is not None or region == settings.aws_region
        )
        if same_endpoint and prefix == settings.table_prefix:
            continue
        targets[region] = (endpoint, prefix)
    return targets


@contextlib.asynccontextmanager
async def open_regions(settings: Settings) -> AsyncIterator[dict[str, Dynamo]]:
    """A client per region of :func:`regional_targets`, closed on exit."""
    async with contextlib.AsyncExitStack() as stack:
        clients: dict[str, Dynamo] = {}
        for region, (endpoint, prefix) in regional_targets(settings).items():
            clients[region] = await stack.enter_async_context(
                open_dynamo(settings, endpoint=endpoint, prefix=prefix, region=region,
                            regional=True)
            )
        yield clients


async def create_regional_tables(regions: dict[str, Dynamo]) -> list[str]:
    """Create the tables of every regional store (idempotent): profiles and held events."""
    created: list[str] = []
    for db in regions.values():
        created += await create_tables(db, datasets=REGIONAL_DATASETS)
    return created
