"""What every route of one dashboard shares: the Agenda, the security policy, the live feed, templates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from starlette.requests import Request

if TYPE_CHECKING:
    from starlette.templating import Jinja2Templates

    from ..agenda import Agenda
    from .live import LiveFeed
    from .security import SecurityPolicy

__all__ = ["Dashboard", "dashboard_of"]


@dataclass(frozen=True)
class Dashboard:
    """One dashboard app's settings and shared objects (``app.state.dashboard``)."""

    agenda: Agenda
    policy: SecurityPolicy
    title: str
    live: LiveFeed
    templates: Jinja2Templates
    static_version: str


def dashboard_of(request: Request) -> Dashboard:
    """The dashboard serving ``request`` (Starlette sets ``request.app`` to the innermost app, so this
    works when the dashboard is mounted inside another application)."""
    return cast(Dashboard, request.app.state.dashboard)
