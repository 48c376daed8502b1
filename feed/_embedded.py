"""Embedded stand-ins for the demo and the tests: moto's DynamoDB server and a Redis.

moto's server answers requests on several threads, but its DynamoDB backend
is not thread-safe (a transaction snapshots whole tables while other threads
write to them), so every request is served under one lock.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from feed import keys
from feed.queue import deserialize_job, serialize_job

__all__ = ["InProcessRedis", "embedded_dynamodb", "free_port"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Serialized:
    """A WSGI app that handles one request at a time."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        with self.lock:
            return list(self.app(environ, start_response))


@contextlib.contextmanager
def embedded_dynamodb(port: int | None = None) -> Iterator[str]:
    """moto's DynamoDB on 127.0.0.1 in a background thread; yields its endpoint URL."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = _Serialized(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", port or free_port(), app, threaded=True,
                         request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, name="dynamodb-stand-in",
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


class InProcessRedis:
    """An in-process Redis stand-in (fakeredis): no sockets, no threads."""

    def __init__(self) -> None:
        import arq.worker
        import fakeredis

        async def _no_info(*_: Any, **__: Any) -> None:
            return None

        # The stand-in has no INFO command, which arq's worker only uses to log versions.
        arq.worker.log_redis_info = _no_info  # type: ignore[attr-defined]
        self.server = fakeredis.FakeServer()

    def cache_client(self) -> Any:
        from fakeredis.aioredis import FakeRedis

        return FakeRedis(server=self.server, decode_responses=True)

    def queue_client(self) -> Any:
        from arq.connections import ArqRedis
        from fakeredis.aioredis import FakeConnection
        from redis.asyncio import ConnectionPool

        connection_class: Any = FakeConnection
        pool = ConnectionPool(connection_class=connection_class, server=self.server)
        return ArqRedis(pool, job_serializer=serialize_job, job_deserializer=deserialize_job,
                        default_queue_name=keys.QUEUE_REALTIME)
