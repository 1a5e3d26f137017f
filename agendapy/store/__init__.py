"""Storage: the JobStore interface and its MongoDB implementation."""

from .base import JobCriteria, JobStore
from .mongo import MongoJobStore

__all__ = ["JobCriteria", "JobStore", "MongoJobStore"]
