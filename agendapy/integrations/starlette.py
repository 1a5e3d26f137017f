"""Run an Agenda with a Starlette or FastAPI app: connect (and start the worker) on startup, stop
gracefully on shutdown, and reach the Agenda from routes.

    from fastapi import Depends, FastAPI
    from agendapy.integrations.starlette import agenda_lifespan, get_agenda

    app = FastAPI(lifespan=agenda_lifespan(agenda))

    @app.post("/signup")
    async def signup(email: str, agenda: Agenda = Depends(get_agenda)) -> None:
        await agenda.now("send welcome", {"to": email})
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

try:
    from starlette.requests import HTTPConnection
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "agendapy.integrations.starlette needs Starlette (pip install starlette, or fastapi)"
    ) from exc

from ..agenda import Agenda

__all__ = ["Lifespan", "agenda_lifespan", "get_agenda"]

#: A Starlette lifespan: called with the app, returns an async context manager yielding None (no state)
#: or the lifespan state (when the wrapped lifespan yields some).
Lifespan = (
    Callable[[Any], AbstractAsyncContextManager[None]]
    | Callable[[Any], AbstractAsyncContextManager[Mapping[str, Any]]]
)

_STATE_KEY = "agenda"


def agenda_lifespan(
    agenda: Agenda,
    *,
    start_worker: bool = True,
    wrap: Callable[[Any], Any] | None = None,
    grace: float = 8.0,
) -> Lifespan:
    """A lifespan for ``Starlette(lifespan=...)`` / ``FastAPI(lifespan=...)`` that runs ``agenda``.

    On startup it connects (a database that cannot be reached fails the startup), starts the worker
    when ``start_worker``, stores the Agenda as ``app.state.agenda`` (for :func:`get_agenda`), then
    enters ``wrap``. On shutdown it leaves ``wrap`` first, then stops the worker (running jobs get
    ``grace`` seconds to finish, then are cancelled and unlocked for another worker) and closes.

    Args:
        agenda: the Agenda to run.
        start_worker: also process jobs in this process (False: schedule and query only, with workers
            elsewhere, e.g. ``agendapy worker``).
        wrap: the app's own lifespan, to compose with: it runs inside this one, so its startup can
            already schedule jobs; the state it yields is passed on.
        grace: seconds running jobs may take to finish on shutdown.
    """

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        await agenda.connect()
        try:
            state = getattr(app, "state", None)
            if state is not None:
                setattr(state, _STATE_KEY, agenda)
            if start_worker:
                await agenda.start()
            if wrap is None:
                yield None
            else:
                async with _as_context(wrap, app) as wrapped_state:
                    yield wrapped_state
        finally:
            await agenda.stop(grace=grace)
            await agenda.close()

    return lifespan


def _as_context(lifespan: Callable[[Any], Any], app: Any) -> AbstractAsyncContextManager[Any]:
    """A lifespan as an async context manager (Starlette also accepts async generator functions)."""
    if inspect.isasyncgenfunction(lifespan):
        return asynccontextmanager(lifespan)(app)
    made = lifespan(app)
    if not (hasattr(made, "__aenter__") and hasattr(made, "__aexit__")):
        raise TypeError(f"wrap must be a lifespan (app -> async context manager), got {lifespan!r}")
    context: AbstractAsyncContextManager[Any] = made
    return context


def get_agenda(connection: HTTPConnection) -> Agenda:
    """The app's Agenda, for routes (``Depends(get_agenda)`` in FastAPI; ``get_agenda(request)`` in
    Starlette). Raises RuntimeError when the app was not built with :func:`agenda_lifespan`."""
    agenda = getattr(connection.state, _STATE_KEY, None)
    if agenda is None:
        agenda = getattr(connection.app.state, _STATE_KEY, None)
    if not isinstance(agenda, Agenda):
        raise RuntimeError(
            "this app has no Agenda: create it with lifespan=agenda_lifespan(agenda) "
            "(and make sure the server runs the lifespan)"
        )
    return agenda
