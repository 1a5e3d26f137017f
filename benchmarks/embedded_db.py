"""The database a small benchmark script talks to: the URL it was given, or the embedded server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit


@contextmanager
def database_url(mongo_url: str | None, database: str) -> Iterator[str]:
    """``mongo_url`` as given, or (None) the URL of database ``database`` on an embedded server
    started for the block and stopped after it (the ``embedded`` extra)."""
    if mongo_url is not None:
        yield mongo_url
        return
    from agendapy.embedded import EmbeddedServer

    server = EmbeddedServer(None)
    server.start()
    try:
        yield urlunsplit(urlsplit(server.url)._replace(path=f"/{database}"))
    finally:
        server.stop()
