"""The PostgreSQL store: jobs in Node Agenda's ``agenda_jobs`` table (``@agendajs/postgres-backend``).

Needs the ``postgres`` extra (``pip install 'agendapy[postgres]'``: psycopg 3 and its pool).
"""

from __future__ import annotations

import importlib
from typing import Any

from .store import PostgresJobStore

__all__ = ["PostgresJobStore", "PostgresLogStore", "PostgresRunStore"]

_LAZY = {"PostgresRunStore": ".runs", "PostgresLogStore": ".logs"}


def __getattr__(name: str) -> Any:
    # The run and log stores load on first use.
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(name)
