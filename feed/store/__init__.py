"""DynamoDB access, one module per dataset, bundled in :class:`Stores`."""

from __future__ import annotations

from collections.abc import Mapping

from feed.store._dynamo import Backoff, Dynamo, open_dynamo
from feed.store.koos import Koos
from feed.store.ledger import DeadLetters, Ledger
from feed.store.reactions import Reactions
from feed.store.recommendations import Recommendations
from feed.store.regions import create_regional_tables, open_regions
from feed.store.relations import Relations
from feed.store.tables import (
    Change,
    Reconciliation,
    create_tables,
    drop_tables,
    reconcile_regional_tables,
    reconcile_tables,
)
from feed.store.timelines import Entry, Timelines
from feed.store.users import Users

__all__ = [
    "Backoff",
    "Change",
    "Dynamo",
    "Entry",
    "Reconciliation",
    "Stores",
    "create_regional_tables",
    "create_tables",
    "drop_tables",
    "open_dynamo",
    "open_regions",
    "reconcile_regional_tables",
    "reconcile_tables",
]


class Stores:
    """Every dataset store over one DynamoDB connection (and the home regions' profile
    stores, see :mod:`feed.store.regions`)."""

    def __init__(self, db: Dynamo, regions: Mapping[str, Dynamo] | None = None) -> None:
        self.db = db
        self.users = Users(db, regions)
        self.koos = Koos(db)
        self.reactions = Reactions(db)
        self.relations = Relations(db)
        self.timelines = Timelines(db)
        self.recommendations = Recommendations(db)
        self.ledger = Ledger(db)
        self.dead_letters = DeadLetters(db, regions)
