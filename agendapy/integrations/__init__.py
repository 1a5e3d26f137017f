"""Framework integrations: ``agendapy.integrations.starlette`` (Starlette and FastAPI lifespans and a
dependency) and ``agendapy.integrations.fastapi`` (the same, plus an ``AgendaDep`` annotation).

Synchronous frameworks (Django, Flask) use :class:`agendapy.sync.SyncAgenda`; see ``docs/frameworks.md``.
"""
