"""The agendapy web dashboard: overview, job list and detail, actions, live updates, workers.

    from agendapy.dashboard import create_app, serve

    app.mount("/jobs", create_app(agenda, token="..."))   # in any ASGI application
    await serve(agenda, host="127.0.0.1", port=8080)      # on its own: a new token, a sign-in link

Needs the ``dashboard`` extra (``pip install "agendapy[dashboard]"``).
"""

from __future__ import annotations

from .app import create_app
from .security import is_loopback_host
from .server import UnsafeBind, serve

__all__ = ["UnsafeBind", "create_app", "is_loopback_host", "serve"]
