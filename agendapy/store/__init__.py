"""Storage: the JobStore interface and its MongoDB implementation.

The PostgreSQL store is :mod:`agendapy.store.postgres` (the ``postgres`` extra); the in-memory one is
:class:`agendapy.testing.MemoryJobStore`.
"""

from .base import JobCriteria, JobStore
from .mongo import MongoJobStore

__all__ = ["JobCriteria", "JobStore", "MongoJobStore"]
