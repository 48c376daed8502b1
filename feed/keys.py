"""Every Redis key and DynamoDB key of the service is built here, and only here.

Redis keys of one user carry the hash tag ``{user_id}`` so everything of one
user lives on one Redis Cluster slot; ids are validated to ``[A-Za-z0-9_-]``,
so they can never contain a brace, colon or wildcard.
"""

from __future__ import annotations

import hashlib
import time

# --- arq queues (on the queue Redis) --------------------------------------------------

QUEUE_REALTIME = "feed:queue:realtime"
QUEUE_BACKFILL = "feed:queue:backfill"
QUEUES = {"realtime": QUEUE_REALTIME, "backfill": QUEUE_BACKFILL}
# Written just before WAIT after a batch is enqueued: the replication stream is ordered, so
# replicas that acknowledged it hold every earlier write of the batch.
QUEUE_REPLICATION_PROBE = "feed:queue:replicated"
# The run id of the queue's server the workers last saw: a different one means a failover
# (or a restart), and the in-progress marks of jobs cut off by it are released.
QUEUE_PRIMARY = "feed:queue:primary"

# --- timeline sort keys ---------------------------------------------------------------

SORT_SEP = "#"
# Every sentinel member of a cached set starts with this; ids never do ([A-Za-z0-9_-]).
SENTINEL_PREFIX = "!"
TIMELINE_READY = "!ready"  # sentinel member of a complete cached timeline (score +inf)
TIMELINE_BUILDING = "!building"  # sentinel member while a rebuild is in progress
COMPLETE = "!all"  # sentinel of a cached author set that holds the author's whole history
LOADED = "!"  # sentinel member of a cached set that has been loaded from storage
TRENDING_AT = "!at:"  # sentinel member of a trending list: when it was computed, in ms
READY_PROBE_USER = "!ready"  # a user id no user can have: /readyz reads it from DynamoDB


def is_sentinel(member: str) -> bool:
    """True for a sentinel member of a cached set, never for an id."""
    return member.startswith(SENTINEL_PREFIX)


def trending_computed_at(computed_ms: int) -> str:
    """The sentinel member recording when a trending list was computed."""
    return f"{TRENDING_AT}{computed_ms}"


def lang_day(lang: str, created_ms: int) -> str:
    """Partition of the koos' language index: one per language and UTC day."""
    return f"{lang}{SORT_SEP}{time.strftime('%Y%m%d', time.gmtime(created_ms / 1000))}"


def sort_key(created_ms: int, koo_id: str) -> str:
    """``created_ms:013d#koo_id``: lexical order is time order, ties broken by id."""
    return f"{created_ms:013d}{SORT_SEP}{koo_id}"


def parse_sort_key(value: str) -> tuple[int, str]:
    """Inverse of :func:`sort_key`."""
    created, _, koo_id = value.partition(SORT_SEP)
    return int(created), koo_id


# --- Redis: per-user (hash-tagged) ----------------------------------------------------


def timeline(user_id: str) -> str:
    """Sorted set of koo ids (score: created ms) cached for an active reader."""
    return f"feed:{{{user_id}}}:tl"


def timeline_lock(user_id: str) -> str:
    """Single-flight lock for rebuilding one reader's cached timeline."""
    return f"feed:{{{user_id}}}:tl:lock"


def following(user_id: str) -> str:
    """Set of user ids ``user_id`` follows (with the LOADED sentinel)."""
    return f"feed:{{{user_id}}}:following"


def blocking(user_id: str) -> str:
    """Set of user ids ``user_id`` blocks."""
    return f"feed:{{{user_id}}}:blocking"


def muting(user_id: str) -> str:
    """Set of user ids ``user_id`` mutes."""
    return f"feed:{{{user_id}}}:muting"


def blocked_by(user_id: str) -> str:
    """Set of user ids that block ``user_id``."""
    return f"feed:{{{user_id}}}:blocked_by"


def pull_floors(user_id: str) -> str:
    """Hash followed celebrity -> the oldest position of theirs the reader may see."""
    return f"feed:{{{user_id}}}:pullfloors"


def affinity(user_id: str) -> str:
    """Hash author_id -> interaction weight of the reader with that author."""
    return f"feed:{{{user_id}}}:affinity"


def profile(user_id: str) -> str:
    """A user's profile as JSON (counters included), cached for a short while."""
    return f"feed:{{{user_id}}}:profile"


def author_recent(author_id: str) -> str:
    """Sorted set of an author's recent koo ids (pulled at read time for celebrities)."""
    return f"feed:{{{author_id}}}:recent"


def live_stream(user_id: str) -> str:
    """Redis Stream of what entered or left a reader's feed, kept only while the reader
    has a realtime stream open or had one a short while ago (capped, with a TTL)."""
    return f"feed:{{{user_id}}}:live"


def live_seen(user_id: str) -> str:
    """Sorted set of koo ids already written to a reader's live stream (score: created
    ms), so a koo delivered twice (announce, push, a retried chunk) is streamed once."""
    return f"feed:{{{user_id}}}:live:seen"


def live_fans(author_id: str) -> str:
    """Set of readers with a live stream who follow a pulled (celebrity) author: a
    celebrity's new koo is written to their live streams, since it is never fanned out."""
    return f"feed:{{{author_id}}}:live:fans"


# Pub/sub channel on the cache Redis: reader ids whose live streams just grew. Every API
# process listens on one connection and reads the streams of the readers it serves.
LIVE_WAKE_CHANNEL = "feed:live:wake"


def koo(koo_id: str) -> str:
    """Hash of a koo's body and counters."""
    return f"feed:koo:{{{koo_id}}}"


def celebrities() -> str:
    """Set of authors whose koos are pulled at read time (with the LOADED sentinel)."""
    return "feed:celebrities"


def trending(lang: str) -> str:
    """Sorted set of trending koo ids in one language (score: decayed engagement)."""
    return f"feed:trending:{{{lang}}}"


def trending_lock(lang: str) -> str:
    """Held by the process refreshing one language's trending list."""
    return f"feed:trending:{{{lang}}}:lock"


def popular_authors(lang: str) -> str:
    """Sorted set of popular authors in one language (score: followers)."""
    return f"feed:popular:{{{lang}}}"


def recommendations(user_id: str, kind: str) -> str:
    """Cached recommendations of one kind (``follows`` or ``koos``) for a reader."""
    return f"feed:{{{user_id}}}:rec:{kind}"


def rate_limit(token_digest: str) -> str:
    """Token bucket of one API token (by digest: tokens never appear in keys)."""
    return f"feed:ratelimit:{{{token_digest}}}"


def token_digest(token: str) -> str:
    """A short, non-reversible name for an API token."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def auth_failures(address: str) -> str:
    """Token bucket of failed authentications from one client address (by digest: client
    addresses never appear in keys, and IPv6 colons never reach a hash tag)."""
    return f"feed:authfail:{{{hashlib.sha256(address.encode()).hexdigest()[:16]}}}"


# --- Redis: job ids (arq _job_id) -----------------------------------------------------


def worker_health(queue: str) -> str:
    """Where a queue's workers report they are alive (arq's health check; it expires)."""
    return f"{QUEUES[queue]}:health-check"


def event_job(event_id: str, digest: str) -> str:
    """arq job id of one event: a second enqueue of the same event is a no-op, while a
    different event under a used ``event_id`` (another ``digest``) still reaches a
    worker, which dead-letters it as ``event_id_reused``."""
    return f"ev:{event_id}:{digest[:16]}"


def fanout_job(koo_id: str, attempt: int = 0) -> str:
    """arq job id of the fan-out coordinator of one koo (attempt > 0: sweeper re-runs)."""
    return f"fanout:{koo_id}:{attempt}"


def fanout_chunk_job(koo_id: str, chunk_id: str) -> str:
    """arq job id of one chunk of a fan-out."""
    return f"fanout:{koo_id}:chunk:{chunk_id}"


def purge_koo_job(koo_id: str) -> str:
    """arq job id of the purge of a deleted koo from every timeline (once per koo)."""
    return f"purge-koo:{koo_id}"


def merge_job(reader: str, author: str, event_id: str) -> str:
    """arq job id of merging an author into a reader's timeline, after the relation
    event ``event_id`` (a later event merges again)."""
    return f"merge:{reader}:{author}:{event_id}"


def unmerge_job(reader: str, author: str, event_id: str) -> str:
    """arq job id of purging an author from a reader's timeline, after ``event_id``."""
    return f"unmerge:{reader}:{author}:{event_id}"


def demote_job(author: str, event_id: str) -> str:
    """arq job id of a celebrity's demotion, checked after the unfollow ``event_id``."""
    return f"demote:{author}:{event_id}"


def replay_job(event_id: str, digest: str, failed_at: int) -> str:
    """arq job id of replaying a dead letter: one per dead letter written, so replaying it
    twice enqueues once, and a letter written again can be replayed again."""
    return f"replay:{event_id}:{digest[:16]}:{failed_at}"


def trim_job(reader: str) -> str:
    """arq job id of trimming a reader's stored timeline to the cap (one queued at a time)."""
    return f"trim:{reader}"


def popular_job(slot: str) -> str:
    """arq job id of a refresh of the popular creators: ``slot`` names the run (a cron
    slot, a backfill run, or "missing" for a read that found a list gone)."""
    return f"popular:{slot}"


def erase_job(user_id: str, run: int) -> str:
    """arq job id of one run of a user's erasure (each run goes on where the last stopped,
    and enqueues the next under run + 1)."""
    return f"erase:{user_id}:{run}"


def user_keys_pattern(user_id: str) -> str:
    """SCAN pattern of every cached key of one user (all carry the ``{user_id}`` tag)."""
    return f"feed:{{{user_id}}}:*"


def popular_authors_pattern() -> str:
    """SCAN pattern of every language's popular-authors list."""
    return "feed:popular:*"


def recommendations_pattern() -> str:
    """SCAN pattern of every reader's cached recommendations."""
    return "feed:*:rec:*"


def backfill_chunk_job(run_id: str, chunk: str) -> str:
    """arq job id of one chunk of a ``feed backfill`` run."""
    return f"backfill:{run_id}:{chunk}"


# --- Redis: backfill runs (the queue's Redis) -------------------------------------------


def backfill_run(run_id: str) -> str:
    """Hash of one ``feed backfill`` run's state; ``:enqueued`` and ``:done`` sets beside it."""
    return f"feed:backfill:{run_id}"


def backfill_enqueued(run_id: str) -> str:
    """Set of the chunks of a backfill run that have been enqueued."""
    return f"{backfill_run(run_id)}:enqueued"


def backfill_done(run_id: str) -> str:
    """Set of the chunks of a backfill run that are done."""
    return f"{backfill_run(run_id)}:done"


# --- DynamoDB: dead letters ---------------------------------------------------------------


def dead_letter_of_event(event_id: str) -> str:
    """Dead-letter id of an event (its replay lands on the same letter)."""
    return f"event:{event_id}"


def dead_letter_of_job(job_id: str) -> str:
    """Dead-letter id of a job whose payload had no usable event_id."""
    return f"job:{job_id}"


def chunk_id(first_follower: str, size: int) -> str:
    """A stable name for a chunk of followers: where it starts and how many."""
    digest = hashlib.blake2s(first_follower.encode(), digest_size=6).hexdigest()
    return f"{digest}-{size}"


# --- DynamoDB ------------------------------------------------------------------------

REL_FOLLOW = "follow"
REL_BLOCK = "block"
REL_MUTE = "mute"
REL_KINDS = (REL_FOLLOW, REL_BLOCK, REL_MUTE)


def relation_sk(kind: str, other_id: str) -> str:
    """Sort key of a relation row ``user -> other``: ``kind#other``."""
    return f"{kind}{SORT_SEP}{other_id}"


def relation_inverse_sk(kind: str, user_id: str) -> str:
    """Sort key on the inverse index (partition: other): ``kind#user``."""
    return f"{kind}{SORT_SEP}{user_id}"


def relation_prefix(kind: str) -> str:
    """Prefix of every relation sort key of one kind."""
    return f"{kind}{SORT_SEP}"


def split_relation_sk(value: str) -> tuple[str, str]:
    """``kind#other`` -> (kind, other)."""
    kind, _, other = value.partition(SORT_SEP)
    return kind, other


def reaction_sk(user_id: str, kind: str) -> str:
    """Sort key of a reaction row under its koo: ``user#kind``."""
    return f"{user_id}{SORT_SEP}{kind}"


def split_reaction_sk(value: str) -> tuple[str, str]:
    """``user#kind`` -> (user, kind)."""
    user_id, _, kind = value.rpartition(SORT_SEP)
    return user_id, kind


def recommendation_sk(kind: str, rank: int) -> str:
    """Sort key of a stored recommendation: ``kind#rank``."""
    return f"{kind}{SORT_SEP}{rank:04d}"


FANOUT_SHARD = "pending"  # partition of the sparse index of unfinished fan-outs
CELEBRITY_SHARD = "celebrity"  # partition of the sparse index of celebrity authors


# --- notifications (Redis; the table's sort keys are in feed/notify_keys.py) ---------

def notifications(user_id: str) -> str:
    """Cached notifications of a recipient: sorted set (all scores 0) of updated sort keys."""
    return f"feed:{{{user_id}}}:notif"


def notification_bodies(user_id: str) -> str:
    """Hash group -> cached notification (JSON), plus the seen mark and the window's floor."""
    return f"feed:{{{user_id}}}:notif:b"


def notify_settle_lock(user_id: str, group: str) -> str:
    """Held by the worker moving one group's count (an optimisation: the count is exact
    without it)."""
    return f"feed:{{{user_id}}}:notif:lock:{group}"


def notify_settle_gen(user_id: str, group: str) -> str:
    """Bumped after every change to a group's actors, so a settling worker sees it."""
    return f"feed:{{{user_id}}}:notif:gen:{group}"


def notify_job(event_id: str, part: str = "") -> str:
    """arq job id of the notification work after one event (``part``: which of several)."""
    return f"notify:{event_id}:{part}"
