"""DynamoDB table definitions: names, keys, indexes and TTL attributes.

One entry per dataset. ``feed tables create`` reconciles the tables with these
definitions: it creates missing tables, adds missing indexes one at a time,
enables TTL, and reports what it cannot change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["TABLES", "Index", "TableDef"]

USERS = "users"
KOOS = "koos"
REACTIONS = "reactions"
RELATIONS = "relations"
TIMELINES = "timelines"
RECOMMENDATIONS = "recommendations"
LEDGER = "ledger"
DEAD_LETTERS = "dead_letters"
AUDIT = "audit"
NOTIFICATIONS = "notifications"

# What a home region's own store holds: its users' profiles, and the whole events of dead
# letters about them (feed.store.regions).
REGIONAL_DATASETS = (USERS, DEAD_LETTERS)

# Index names
KOOS_BY_AUTHOR = "by_author"
KOOS_BY_LANG_DAY = "by_lang_day"
KOOS_FANOUT_PENDING = "fanout_pending"
REACTIONS_BY_USER = "by_user"
REACTIONS_BY_TIME = "by_time"
RELATIONS_INVERSE = "inverse"
USERS_CELEBRITIES = "celebrities"
NOTIFY_BY_UPDATED = "by_updated"
NOTIFY_PENDING = "pending"
NOTIFY_LIVE = "live_actors"
NOTIFY_BY_ACTOR = "by_actor"


@dataclass(frozen=True, slots=True)
class Index:
    name: str
    pk: str
    sk: str | None = None
    sk_type: str = "S"
    projection: tuple[str, ...] | None = None  # None: ALL; () : KEYS_ONLY
    local: bool = False

    def as_aws(self) -> dict[str, Any]:
        schema = [{"AttributeName": self.pk, "KeyType": "HASH"}]
        if self.sk:
            schema.append({"AttributeName": self.sk, "KeyType": "RANGE"})
        if self.projection is None:
            projection: dict[str, Any] = {"ProjectionType": "ALL"}
        elif not self.projection:
            projection = {"ProjectionType": "KEYS_ONLY"}
        else:
            projection = {
                "ProjectionType": "INCLUDE",
                "NonKeyAttributes": list(self.projection),
            }
        return {"IndexName": self.name, "KeySchema": schema, "Projection": projection}


@dataclass(frozen=True, slots=True)
class TableDef:
    name: str
    pk: str
    sk: str | None = None
    indexes: tuple[Index, ...] = ()
    ttl_attribute: str | None = None
    extra_types: dict[str, str] = field(default_factory=dict)

    def create_request(self, table_name: str) -> dict[str, Any]:
        """The CreateTable request for this definition (on-demand billing)."""
        attrs: dict[str, str] = {self.pk: "S"}
        schema = [{"AttributeName": self.pk, "KeyType": "HASH"}]
        if self.sk:
            attrs[self.sk] = "S"
            schema.append({"AttributeName": self.sk, "KeyType": "RANGE"})
        for index in self.indexes:
            attrs[index.pk] = "S"
            if index.sk:
                attrs[index.sk] = index.sk_type
        attrs.update(self.extra_types)
        request: dict[str, Any] = {
            "TableName": table_name,
            "KeySchema": schema,
            "AttributeDefinitions": [
                {"AttributeName": name, "AttributeType": kind} for name, kind in attrs.items()
            ],
            "BillingMode": "PAY_PER_REQUEST",
        }
        gsis = [i.as_aws() for i in self.indexes if not i.local]
        lsis = [i.as_aws() for i in self.indexes if i.local]
        if gsis:
            request["GlobalSecondaryIndexes"] = gsis
        if lsis:
            request["LocalSecondaryIndexes"] = lsis
        return request


TABLES: dict[str, TableDef] = {
    # Profiles and counters. Sparse index: only celebrity authors carry celeb_shard.
    USERS: TableDef(
        USERS,
        pk="user_id",
        indexes=(Index(USERS_CELEBRITIES, pk="celeb_shard", sk="user_id", projection=()),),
    ),
    # Koos. author_key / lang_day exist only on live koos, fanout_shard only while a
    # fan-out is unfinished: each index holds exactly what its reader wants.
    KOOS: TableDef(
        KOOS,
        pk="koo_id",
        indexes=(
            Index(KOOS_BY_AUTHOR, pk="author_key", sk="created_sk", projection=()),
            Index(KOOS_BY_LANG_DAY, pk="lang_day", sk="created_sk", projection=()),
            Index(KOOS_FANOUT_PENDING, pk="fanout_shard", sk="fanout_deadline", sk_type="N",
                  projection=()),
        ),
    ),
    # Reactions under their koo (sk user#kind). Only active reactions carry the
    # index attributes: by_time lists a koo's reactions newest first, by_user a
    # user's reactions (with the koo's author, for affinity).
    REACTIONS: TableDef(
        REACTIONS,
        pk="koo_id",
        sk="rk",
        indexes=(
            Index(REACTIONS_BY_TIME, pk="koo_id", sk="react_sk", local=True,
                  projection=("user_id", "kind", "created_at")),
            Index(REACTIONS_BY_USER, pk="user_key", sk="react_sk",
                  projection=("koo_id", "kind", "author_id", "created_at")),
        ),
    ),
    # Relations user -> other (sk kind#other); only active ones are on the inverse index.
    RELATIONS: TableDef(
        RELATIONS,
        pk="user_id",
        sk="rel",
        indexes=(Index(RELATIONS_INVERSE, pk="inv_pk", sk="inv_sk", projection=()),),
    ),
    TIMELINES: TableDef(TIMELINES, pk="reader_id", sk="sk", ttl_attribute="expires_at"),
    RECOMMENDATIONS: TableDef(
        RECOMMENDATIONS, pk="user_id", sk="rk", ttl_attribute="expires_at"
    ),
    LEDGER: TableDef(LEDGER, pk="event_id", ttl_attribute="expires_at"),
    DEAD_LETTERS: TableDef(DEAD_LETTERS, pk="dl_id"),
    # Erasures and exports: who asked, when, and counts; the user only as a keyed digest.
    AUDIT: TableDef(AUDIT, pk="audit_id"),
    # Notifications, one partition per recipient (see feed/store/notifications.py). Local
    # indexes, read consistently: live groups newest first, actor rows whose group count is
    # still to move, counted actors by time; by_actor finds a user's rows in others'.
    NOTIFICATIONS: TableDef(
        NOTIFICATIONS,
        pk="user_id",
        sk="nk",
        indexes=(
            Index(NOTIFY_BY_UPDATED, pk="user_id", sk="upd_sk", local=True),
            Index(NOTIFY_PENDING, pk="user_id", sk="pend", local=True),
            Index(NOTIFY_LIVE, pk="user_id", sk="live_sk", local=True, projection=()),
            Index(NOTIFY_BY_ACTOR, pk="actor_key", sk="actor_sk", projection=()),
        ),
        ttl_attribute="expires_at",
    ),
}
