"""Command counting for the Python workers of ``benchmarks/compare.py`` (agendapy and APScheduler 4).

A ``pymongo.monitoring.CommandListener`` registered before the worker creates its client counts, from
``enable()`` on:

* commands per name, and their summed driver-side durations;
* write statements (each ``update``/``delete`` statement and inserted document, each
  ``findAndModify``; a transaction's statements count once, at ``commitTransaction``): on a server
  that commits every statement durably (SecantusDB with ``--sync-on-commit``), one commit each;
* the statements per command name, and per collection (``update jobs``, ``insert job_results`` ...);
* when the first command reached each collection (epoch seconds), so the harness can time a drain
  from the first claim rather than from process start.

``install(path)`` registers it and writes the counts to ``path`` on SIGUSR2 (then stops counting).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from typing import Any

from pymongo import monitoring

_WRITES = {"update": "updates", "delete": "deletes", "insert": "documents"}


class CommandCounter(monitoring.CommandListener):
    """Counts started commands, their durations and their write statements."""

    def __init__(self) -> None:
        self.enabled = False
        self.counts: Counter[str] = Counter()
        self.micros: Counter[str] = Counter()
        self.statements: Counter[str] = Counter()
        self.by_collection: Counter[str] = Counter()
        self.first: dict[str, float] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if not self.enabled:
            return
        name = event.command_name
        command = event.command
        self.counts[name] += 1
        target = command.get("collection") if name == "getMore" else command.get(name)
        collection = target if isinstance(target, str) else ""
        if collection:
            self.by_collection[f"{name} {collection}"] += 1
            self.first.setdefault(f"{name} {collection}", time.time())
        in_transaction = "autocommit" in command
        if name in _WRITES and not in_transaction:
            self.statements[name] += len(command.get(_WRITES[name], ()))
        elif (name == "findAndModify" and not in_transaction) or name == "commitTransaction":
            self.statements[name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if self.enabled:
            self.micros[event.command_name] += event.duration_micros

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        if self.enabled:
            self.micros[event.command_name] += event.duration_micros

    def snapshot(self, **extra: Any) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "ms": {name: micros / 1000.0 for name, micros in self.micros.items()},
            "statements": dict(self.statements),
            "by_collection": dict(self.by_collection),
            "first": self.first,
            **extra,
        }

    def write(self, path: str, **extra: Any) -> None:
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.snapshot(**extra), f)
        os.replace(tmp, path)


def install(path: str | None, extra: Any = None) -> CommandCounter | None:
    """Register a counter (before any client is created); on SIGUSR2 write it to ``path``.

    ``extra`` is a callable returning more fields for the file (say, the last job's finish time).
    """
    if not path:
        return None
    counter = CommandCounter()
    monitoring.register(counter)

    def freeze(signum: int, frame: Any) -> None:
        counter.write(path, **(extra() if extra else {}))
        counter.enabled = False

    signal.signal(signal.SIGUSR2, freeze)
    return counter
