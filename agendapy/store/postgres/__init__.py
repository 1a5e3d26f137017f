"""The PostgreSQL store: jobs in Node Agenda's ``agenda_jobs`` table (``@agendajs/postgres-backend``).

Needs the ``postgres`` extra (``pip install 'agendapy[postgres]'``: psycopg 3 and its pool).
"""

from __future__ import annotations

from .logs import PostgresLogStore
from .runs import PostgresRunStore
from .store import PostgresJobStore

__all__ = ["PostgresJobStore", "PostgresLogStore", "PostgresRunStore"]
