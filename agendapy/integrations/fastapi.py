"""FastAPI: :func:`agenda_lifespan` and :func:`get_agenda` (see ``agendapy.integrations.starlette``),
plus ``AgendaDep``, an annotation that injects the app's Agenda into a route.

    from agendapy.integrations.fastapi import AgendaDep, agenda_lifespan

    app = FastAPI(lifespan=agenda_lifespan(agenda))

    @app.post("/reports")
    async def order_report(agenda: AgendaDep) -> dict[str, str]:
        job = await agenda.now("build report")
        return {"job": job.id or ""}
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from ..agenda import Agenda
from .starlette import agenda_lifespan, get_agenda

__all__ = ["AgendaDep", "agenda_lifespan", "get_agenda"]

#: ``agenda: AgendaDep`` in a route's parameters receives the app's Agenda.
AgendaDep = Annotated[Agenda, Depends(get_agenda)]
