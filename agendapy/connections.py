"""Reaching MongoDB: what ``db=`` may be, the client made from it, and logs of connection loss.

A store receives a :class:`MongoConnection` (or anything it accepts) and asks it for the database
when it connects; the URL checks, Motor adoption, client settings and driver monitoring live here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConfigurationError, InvalidURI
from pymongo.uri_parser import parse_uri

from .errors import DatabaseUnavailable, InvalidInput

if TYPE_CHECKING:
    from .embedded import EmbeddedLease

__all__ = [
    "DEFAULT_DATABASE",
    "DEFAULT_DATA_DIR",
    "DefaultDatabase",
    "MongoConnection",
    "environment_url",
    "redact_url",
]

log = logging.getLogger("agendapy.store")
# The default database's messages are the Agenda's own.
agenda_log = logging.getLogger("agendapy")

#: The database used when neither ``database=`` nor the URL's path names one.
DEFAULT_DATABASE = "agenda"
#: How long an operation waits for a reachable server unless the URL says otherwise.
_SERVER_SELECTION_TIMEOUT_MS = 10_000
#: Where the embedded database keeps its files when no URL is given.
DEFAULT_DATA_DIR = ".agendapy/db"
#: How often a process using the embedded database checks that its server still runs.
_EMBEDDED_CHECK_EVERY = 1.0


def redact_url(url: str) -> str:
    """A database URL (MongoDB or PostgreSQL) without its password, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def _brief(exc: Exception) -> str:
    """The useful head of a PyMongo connection error (without the topology dump)."""
    text = str(exc)
    for marker in (" (configured timeouts", ", Timeout:"):
        text = text.split(marker, 1)[0]
    return text


class MongoConnection:
    """Where a store's database comes from, resolved into a client on first use.

    Args:
        source: a ``mongodb://`` or ``mongodb+srv://`` URL (the database comes from its path), an
            ``AsyncMongoClient``, an ``AsyncDatabase``, or a Motor client/database (its settings are
            copied onto a native async client, since Motor is deprecated upstream).
        database: the database name when ``source`` does not say (default ``agenda``).

    A URL is checked at once (``InvalidInput`` naming ``db``); a client this connection makes (from a
    URL or a Motor object) is its own and closed by :meth:`close`, one it was given is left open.
    """

    def __init__(self, source: Any, *, database: str | None = None) -> None:
        self._source = source
        self._database_name = database
        self._url: str | None = None
        self._client: AsyncMongoClient[Any] | None = None
        self._owns_client = False
        if isinstance(source, str):
            self._url = _checked_url(source)

    def describe(self) -> str:
        """Where this connection points, for messages (no password)."""
        if self._url:
            return redact_url(self._url)
        if self._client is not None:
            return ", ".join(f"{h}:{p}" for h, p in self._client.topology_description.server_descriptions())
        return repr(self._source)

    def unavailable(self, exc: Exception) -> DatabaseUnavailable:
        """The error for "cannot reach the server", naming it."""
        return DatabaseUnavailable(f"cannot reach MongoDB at {self.describe()}: {_brief(exc)}")

    def database(self) -> AsyncDatabase[dict[str, Any]]:
        """The database, making the client if needed (no round trip: the driver connects lazily)."""
        source = self._source
        if _is_motor(source):
            source = _native_from_motor(source)
            self._owns_client = True
        if isinstance(source, str):
            parsed = parse_uri(source, warn=True) if source.startswith("mongodb://") else {"database": None}
            kwargs: dict[str, Any] = {"event_listeners": [_ConnectionLog()]}
            if "serverselectiontimeoutms" not in source.lower():
                kwargs["serverSelectionTimeoutMS"] = _SERVER_SELECTION_TIMEOUT_MS
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(source, **kwargs)
            self._client, self._owns_client = client, True
            name = self._database_name or parsed.get("database") or _db_from_srv(source) or DEFAULT_DATABASE
            return client[name]
        if isinstance(source, AsyncMongoClient):
            self._client = source
            return source[self._database_name or _default_database(source)]
        if isinstance(source, AsyncDatabase):
            self._client = source.client
            return source
        raise InvalidInput(
            "db",
            source,
            "must be a mongodb:// URL, an AsyncMongoClient, an AsyncDatabase or a Motor client/database",
        )

    async def close(self) -> None:
        """Close the client if this connection made it."""
        if self._client is not None and self._owns_client:
            await self._client.close()
        self._client = None


def environment_url() -> str | None:
    """The database URL the environment gives: ``$AGENDAPY_DATABASE_URL`` (either scheme), else
    ``$AGENDAPY_MONGO_URL`` (kept from before PostgreSQL was supported); None when neither is set."""
    return os.environ.get("AGENDAPY_DATABASE_URL") or os.environ.get("AGENDAPY_MONGO_URL") or None


class DefaultDatabase:
    """The database of an Agenda given no ``db``: ``$AGENDAPY_DATABASE_URL`` (MongoDB or PostgreSQL),
    else ``$AGENDAPY_MONGO_URL``, else the embedded server (needs the ``embedded`` extra; files in
    ``$AGENDAPY_DATA_DIR``, default ``.agendapy/db``), shared by the processes using the same files and
    started again if it goes away."""

    def __init__(self) -> None:
        self._lease: EmbeddedLease | None = None
        self._watch: asyncio.Task[None] | None = None

    async def url(self) -> str:
        """The URL to connect to, starting (or joining) the embedded server if needed."""
        url = environment_url()
        if url:
            return url
        from .embedded import ensure_embedded_server

        data_dir = os.environ.get("AGENDAPY_DATA_DIR", DEFAULT_DATA_DIR)
        lease = await asyncio.to_thread(ensure_embedded_server, data_dir)
        self._lease = lease
        self._watch = asyncio.create_task(self._keep_alive(lease), name="agendapy-embedded")
        agenda_log.info("using the embedded database at %s (data in %s)", redact_url(lease.url), data_dir)
        return lease.url

    async def _keep_alive(self, lease: EmbeddedLease) -> None:
        # The shared server may go away under us (killed, crashed): start it again on the same port,
        # and the driver reconnects by itself. Without this a worker would retry a dead port forever.
        failing = False
        while True:
            await asyncio.sleep(_EMBEDDED_CHECK_EVERY)
            try:
                await lease.aensure_live()
            except Exception as exc:
                # Once per outage: the store's own errors say the rest while it lasts.
                (agenda_log.debug if failing else agenda_log.error)(
                    "the embedded database is unavailable: %s", exc
                )
                failing = True
            else:
                if failing:
                    agenda_log.info("the embedded database is running again")
                failing = False

    async def stop_watching(self) -> None:
        """Stop restarting the embedded server (before the connection closes)."""
        watch, self._watch = self._watch, None
        if watch is not None and not watch.done():
            watch.cancel()
            if watch.get_loop() is asyncio.get_running_loop():
                with contextlib.suppress(asyncio.CancelledError):
                    await watch

    def release(self) -> None:
        """Leave the embedded server (it stops shortly after the last process using it has left)."""
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.release()


def _checked_url(url: str) -> str:
    if not url.startswith(("mongodb://", "mongodb+srv://")):
        raise InvalidInput("db", redact_url(url), "must start with mongodb:// or mongodb+srv://")
    if url.startswith("mongodb+srv://"):
        return url  # checking it would resolve DNS records now; the driver does when it connects
    try:
        parse_uri(url, validate=True, warn=False, connect_timeout=None)
    except (InvalidURI, ConfigurationError, ValueError) as exc:
        raise InvalidInput("db", redact_url(url), str(exc)) from None
    return url


class _ConnectionLog(monitoring.ServerListener):
    """Logs when the server becomes unreachable and when it answers again (driver monitoring)."""

    def __init__(self) -> None:
        self._lost: set[Any] = set()

    def opened(self, event: monitoring.ServerOpeningEvent) -> None:
        pass

    def closed(self, event: monitoring.ServerClosedEvent) -> None:
        pass

    def description_changed(self, event: monitoring.ServerDescriptionChangedEvent) -> None:
        before, after = event.previous_description, event.new_description
        host, port = event.server_address
        address = f"{host}:{port}"
        if before.is_server_type_known and not after.is_server_type_known:
            self._lost.add(event.server_address)
            log.warning("lost the connection to MongoDB at %s: %s", address, after.error or "no answer")
        elif event.server_address in self._lost and after.is_server_type_known:
            self._lost.discard(event.server_address)
            log.warning("the connection to MongoDB at %s is back", address)


def _is_motor(obj: Any) -> bool:
    return type(obj).__module__.startswith("motor.")


def _native_from_motor(obj: Any) -> AsyncMongoClient[Any] | AsyncDatabase[Any]:
    """A native async client with the Motor client's settings (Motor wraps a sync PyMongo client)."""
    delegate = getattr(obj, "delegate", None)
    client = getattr(delegate, "client", delegate)  # a Motor database's delegate is a sync Database
    init_kwargs = getattr(client, "_init_kwargs", None)
    if not isinstance(init_kwargs, dict):
        raise InvalidInput("db", obj, "this Motor client's settings cannot be read; pass a mongodb:// URL")
    native: AsyncMongoClient[Any] = AsyncMongoClient(**init_kwargs)
    db_name = getattr(obj, "name", None) if hasattr(obj, "client") else None
    return native[db_name] if isinstance(db_name, str) else native


def _default_database(client: AsyncMongoClient[Any]) -> str:
    try:
        return client.get_default_database().name
    except ConfigurationError:
        return DEFAULT_DATABASE


def _db_from_srv(url: str) -> str | None:
    path = urlsplit(url).path.lstrip("/")
    return path or None
