"""What Stream-Framework 1.4.0 (2016) needs to import and run on current Python.

``install()`` must run before the first ``import stream_framework``. Each shim
papers over one incompatibility and changes nothing else; none alters what
Stream-Framework sends to Redis, so the comparison measures its own code:

1. ``collections.Hashable`` and friends moved to ``collections.abc`` (removed
   from ``collections`` in Python 3.10); ``stream_framework.utils`` uses them.
2. ``stream_framework.feed_managers.base`` names a parameter ``async``, a
   keyword since Python 3.7, so the module does not even compile. An import
   hook compiles that one module with the name ``async`` read as ``async_``
   (same code otherwise).
3. redis-py 3 renamed ``redis.client.BasePipeline`` to ``Pipeline``;
   ``stream_framework.storage.redis.structures.base`` imports the old name.
   (Only with redis-py >= 3.)
4. redis-py 3 changed ``zadd(name, score1, member1, ...)`` to
   ``zadd(name, {member: score})``; Stream-Framework's sorted-set cache calls
   the old form. The shim turns the old positional pairs into the mapping.
   (Only with redis-py >= 3.)
5. Stream-Framework queues its fan-out as Celery tasks whose arguments are
   objects (the manager, the feed class, the operation). A Celery app with
   ``task_always_eager`` runs them in-process, in order, as a worker would,
   without a broker; it uses the pickle serializer, Celery's default in
   Stream-Framework's day (Celery 5 defaults to JSON, which cannot carry them).
"""

from __future__ import annotations

import collections
import collections.abc
import importlib.abc
import importlib.machinery
import importlib.util
import io
import sys
import tokenize
from collections.abc import Sequence
from types import ModuleType
from typing import Any

_ASYNC_MODULES = frozenset({"stream_framework.feed_managers.base"})
_installed = False


def install() -> list[str]:
    """Apply every shim this interpreter and redis-py need; returns their names."""
    global _installed
    applied: list[str] = []
    if _installed:
        return applied
    _installed = True
    for name in ("Hashable", "Iterable", "Mapping", "MutableMapping", "Sequence", "Callable"):
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))
            applied.append(f"collections.{name}")
    sys.meta_path.insert(0, _AsyncParameterFinder())
    applied.append("feed_managers.base: async -> async_")
    applied += _redis_shims()
    applied += _celery_eager()
    return applied


# --- 2. the ``async`` parameter ----------------------------------------------------------


class _AsyncParameterFinder(importlib.abc.MetaPathFinder):
    """Finds the modules that use ``async`` as a name and loads them renamed."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _ASYNC_MODULES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None:
            return None
        return importlib.util.spec_from_file_location(
            fullname, spec.origin, loader=_AsyncParameterLoader(fullname, spec.origin))


class _AsyncParameterLoader(importlib.machinery.SourceFileLoader):
    def source_to_code(  # type: ignore[override]
        self, data: Any, path: Any, *, _optimize: int = -1,
    ) -> Any:
        source = data.decode("utf-8") if isinstance(data, bytes) else str(data)
        return compile(_rename_async(source), path, "exec", dont_inherit=True)


def _rename_async(source: str) -> str:
    """``source`` with every NAME/keyword token ``async`` spelled ``async_``."""
    tokens = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.NAME, tokenize.ASYNC) and tok.string == "async":
            tok = tok._replace(string="async_")
        tokens.append(tok)
    return tokenize.untokenize(tokens)


# --- 3 and 4. redis-py >= 3 ---------------------------------------------------------------


def _redis_shims() -> list[str]:
    import redis
    import redis.client

    applied = []
    if not hasattr(redis.client, "BasePipeline"):
        redis.client.BasePipeline = redis.client.Pipeline  # type: ignore[attr-defined]
        applied.append("redis.client.BasePipeline = Pipeline")
    if int(redis.__version__.split(".")[0]) >= 3:
        modern = redis.client.Redis.zadd

        def zadd(self: Any, name: str, *args: Any, **kwargs: Any) -> Any:
            if args and not isinstance(args[0], dict):
                # The old form: score1, member1, score2, member2, ...
                mapping = {args[i + 1]: args[i] for i in range(0, len(args), 2)}
                return modern(self, name, mapping, **kwargs)
            return modern(self, name, *args, **kwargs)

        redis.client.Redis.zadd = zadd  # type: ignore[assignment,method-assign]
        applied.append("Redis.zadd(name, score, member, ...)")
    return applied


# --- 5. Celery, eagerly ------------------------------------------------------------------


def _celery_eager() -> list[str]:
    import celery  # type: ignore[import-untyped]

    app = celery.Celery("bench-sf", set_as_current=True)
    app.conf.task_always_eager = True
    app.conf.task_serializer = "pickle"
    app.conf.accept_content = ["pickle", "json"]
    app.conf.task_eager_propagates = True
    return ["celery task_always_eager"]
