"""The ``agenda_jobs`` table of Node Agenda's postgres backend, and rows <-> Agenda documents.

The table, its columns, indexes and ``updated_at`` trigger are Node's (``@agendajs/postgres-backend``
3.0.6), so both share one table; agendapy's own fields are extra columns Node never selects by name.
Rows convert to the documents the rest of agendapy already reads (``agendapy.store.schema``:
``read_document``, ``job_from_document``, ``document_from_job``), so one set of rules decides what a
stored job means whatever the database.

Values the column types cannot hold (text with a NUL, an integer beyond 32 bits, ``data`` JSON cannot
represent) are refused with :class:`InvalidInput` naming the field, before anything is written.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb

from ...errors import InvalidData, InvalidInput
from ..schema import AGENDA_FIELDS, EXTRA_FIELDS

__all__ = [
    "COLUMNS",
    "COLUMN_OF",
    "DEFAULT_TABLE",
    "FIELD_OF",
    "Column",
    "check_table_name",
    "column_value",
    "document_to_row",
    "ensure_schema",
    "json_value",
    "row_to_document",
    "to_millis",
]

DEFAULT_TABLE = "agenda_jobs"

Kind = Literal["text", "int", "real", "bool", "date", "json", "interval", "type"]


@dataclass(frozen=True)
class Column:
    """One document field stored in one column: how values are checked and converted."""

    field: str
    column: str
    kind: Kind
    #: VARCHAR length limit (None: TEXT).
    max_length: int | None = None


#: Every document field and its column; Node's first, then agendapy's (``lockToken`` included).
COLUMNS: tuple[Column, ...] = (
    Column("name", "name", "text", 255),
    Column("priority", "priority", "int"),
    Column("nextRunAt", "next_run_at", "date"),
    Column("type", "type", "type"),
    Column("data", "data", "json"),
    Column("lockedAt", "locked_at", "date"),
    Column("lastRunAt", "last_run_at", "date"),
    Column("lastFinishedAt", "last_finished_at", "date"),
    Column("failedAt", "failed_at", "date"),
    Column("failCount", "fail_count", "int"),
    Column("failReason", "fail_reason", "text"),
    Column("repeatInterval", "repeat_interval", "interval", 255),
    Column("repeatTimezone", "repeat_timezone", "text", 100),
    Column("repeatAt", "repeat_at", "text", 255),
    Column("disabled", "disabled", "bool"),
    Column("progress", "progress", "real"),
    Column("debounceStartedAt", "debounce_started_at", "date"),
    Column("startDate", "start_date", "date"),
    Column("endDate", "end_date", "date"),
    Column("skipDays", "skip_days", "json"),
    Column("lastModifiedBy", "last_modified_by", "text", 255),
    Column("fork", "fork", "bool"),
    # agendapy's columns (ALTER TABLE ... ADD COLUMN IF NOT EXISTS; Node leaves them alone).
    Column("lockToken", "lock_token", "text"),
    Column("checkpoint", "checkpoint", "json"),
    Column("fixedDelay", "fixed_delay", "bool"),
    Column("misfire", "misfire", "text"),
    Column("requires", "requires", "json"),
    Column("intervalStartedAt", "interval_started_at", "date"),
    Column("intervalEndedAt", "interval_ended_at", "date"),
    Column("waitingFor", "waiting_for", "json"),
    Column("waitingReason", "waiting_reason", "text"),
    Column("failStack", "fail_stack", "text"),
)
#: Document field -> column, and back.
COLUMN_OF: dict[str, str] = {c.field: c.column for c in COLUMNS}
FIELD_OF: dict[str, str] = {c.column: c.field for c in COLUMNS}
_BY_FIELD: dict[str, Column] = {c.field: c for c in COLUMNS}
#: Job attribute names, to name a refused value as the API user knows it.
_ATTR_OF: dict[str, str] = {key: attr for attr, key in AGENDA_FIELDS + EXTRA_FIELDS} | {
    "lockToken": "lock_token"
}

_SQL_TYPES: dict[Kind, str] = {
    "text": "TEXT",
    "int": "INTEGER",
    "real": "REAL",
    "bool": "BOOLEAN",
    "date": "TIMESTAMPTZ",
    "json": "JSONB",
    "interval": "TEXT",
    "type": "TEXT",
}
_INT32 = (-(2**31), 2**31 - 1)
#: First key of the two-key advisory lock that serialises schema changes (second: the table's hash).
_SCHEMA_LOCK = 0x61676E64  # "agnd"


def check_table_name(table: Any, field: str = "table") -> str:
    """A table name agendapy can derive index, trigger and channel names from."""
    if not isinstance(table, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,39}", table):
        raise InvalidInput(field, table, "must be a letter or _ then up to 39 letters, digits or _")
    return table


# -- DDL --------------------------------------------------------------------------------------------


def _create_table(table: str) -> sql.Composed:
    # Node's table, as its schema.js creates it (same types, defaults and check).
    return sql.SQL(
        """CREATE TABLE IF NOT EXISTS {t} (
            id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
            name VARCHAR(255) NOT NULL,
            priority INTEGER NOT NULL DEFAULT 0,
            next_run_at TIMESTAMPTZ,
            type VARCHAR(10) NOT NULL DEFAULT 'normal' CHECK (type IN ('normal', 'single')),
            locked_at TIMESTAMPTZ,
            last_finished_at TIMESTAMPTZ,
            failed_at TIMESTAMPTZ,
            fail_count INTEGER DEFAULT NULL,
            fail_reason TEXT,
            repeat_timezone VARCHAR(100),
            last_run_at TIMESTAMPTZ,
            repeat_interval VARCHAR(255),
            data JSONB DEFAULT '{{}}'::jsonb,
            repeat_at VARCHAR(255),
            disabled BOOLEAN DEFAULT FALSE,
            progress REAL,
            fork BOOLEAN DEFAULT FALSE,
            last_modified_by VARCHAR(255),
            debounce_started_at TIMESTAMPTZ,
            start_date TIMESTAMPTZ,
            end_date TIMESTAMPTZ,
            skip_days JSONB,
            created_at TIMESTAMPTZ DEFAULT NOW(),
            updated_at TIMESTAMPTZ DEFAULT NOW()
        )"""
    ).format(t=sql.Identifier(table))


def _add_columns(table: str) -> list[sql.Composed]:
    # Node's own migrations (columns added after its first release), then agendapy's columns.
    added = [("start_date", "TIMESTAMPTZ"), ("end_date", "TIMESTAMPTZ"), ("skip_days", "JSONB")]
    added += [(c.column, _SQL_TYPES[c.kind]) for c in COLUMNS if c.field in _ATTR_OF and _is_extra(c)]
    return [
        sql.SQL("ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {c} {type}").format(
            t=sql.Identifier(table), c=sql.Identifier(column), type=sql.SQL(kind)
        )
        for column, kind in added
    ]


def _is_extra(column: Column) -> bool:
    return column.field == "lockToken" or any(key == column.field for _, key in EXTRA_FIELDS)


def _indexes(table: str) -> list[sql.Composed]:
    def name(suffix: str) -> sql.Identifier:
        return sql.Identifier(f"{table}_{suffix}")

    t = sql.Identifier(table)
    return [
        sql.SQL(
            "CREATE INDEX IF NOT EXISTS {i} ON {t} (name, next_run_at, priority DESC, locked_at, disabled)"
            " WHERE disabled = FALSE"
        ).format(i=name("find_and_lock_idx"), t=t),
        # One recurring ("single") row per name, even when two processes call every() at once.
        sql.SQL("CREATE UNIQUE INDEX IF NOT EXISTS {i} ON {t} (name) WHERE type = 'single'").format(
            i=name("single_job_idx"), t=t
        ),
        sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} (locked_at) WHERE locked_at IS NOT NULL").format(
            i=name("locked_at_idx"), t=t
        ),
        sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} (next_run_at) WHERE next_run_at IS NOT NULL").format(
            i=name("next_run_at_idx"), t=t
        ),
    ]


def _trigger_function(table: str) -> sql.Composed:
    # Node names the function without quotes (so PostgreSQL folds it to lower case).
    return sql.SQL(
        "CREATE OR REPLACE FUNCTION {f}() RETURNS TRIGGER AS $$"
        " BEGIN NEW.updated_at = NOW(); RETURN NEW; END; $$ LANGUAGE plpgsql"
    ).format(f=sql.Identifier(f"update_{table.lower()}_updated_at"))


async def ensure_schema(conn: AsyncConnection[Any], table: str) -> None:
    """Create or migrate the jobs table, its indexes and trigger, idempotently.

    One transaction under an advisory lock, so processes starting at once take turns (the second finds
    everything in place). Node's own ``ensureSchema`` may run beside it: every statement is
    ``IF NOT EXISTS``, and the trigger is created only when missing.
    """
    check_table_name(table)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_SCHEMA_LOCK, table))
        await conn.execute(_create_table(table))
        for statement in _add_columns(table) + _indexes(table):
            await conn.execute(statement)
        trigger = f"{table}_updated_at_trigger"
        cur = await conn.execute(
            "SELECT 1 FROM pg_trigger WHERE tgname = %s AND tgrelid = to_regclass(%s)",
            (trigger, sql.Identifier(table).as_string(conn)),
        )
        if await cur.fetchone() is None:
            await conn.execute(_trigger_function(table))
            await conn.execute(
                sql.SQL("CREATE TRIGGER {g} BEFORE UPDATE ON {t} FOR EACH ROW EXECUTE FUNCTION {f}()").format(
                    g=sql.Identifier(trigger),
                    t=sql.Identifier(table),
                    f=sql.Identifier(f"update_{table.lower()}_updated_at"),
                )
            )


# -- rows <-> documents ------------------------------------------------------------------------------


def to_millis(value: datetime) -> datetime:
    """``value`` as agendapy stores dates (as BSON and Node do): aware UTC, whole milliseconds."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


_DIGITS = re.compile(r"-?[0-9]{1,18}")


def row_to_document(row: Mapping[str, Any]) -> dict[str, Any]:
    """The Agenda document of a row (``_id`` the UUID as a string; unknown columns left out).

    Values are passed on as stored, so ``read_document`` judges them as it judges MongoDB's; only
    column types are undone: dates in UTC, a repeat interval of digits (how Node stores a number of
    milliseconds in its text column) as that number.
    """
    doc: dict[str, Any] = {}
    if row.get("id") is not None:
        doc["_id"] = str(row["id"])
    for column in COLUMNS:
        if column.column not in row:
            continue
        value = row[column.column]
        if isinstance(value, datetime):
            value = value.astimezone(UTC)
        elif column.kind == "interval" and isinstance(value, str) and _DIGITS.fullmatch(value):
            value = int(value)
        doc[column.field] = value
    return doc


def document_to_row(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Column -> value (ready to bind) for the fields of ``doc`` (``_id`` and unknown keys left out).

    Raises InvalidInput naming the field when a value cannot be stored in its column.
    """
    return {_BY_FIELD[key].column: column_value(key, value) for key, value in doc.items() if key in _BY_FIELD}


def column_value(field: str, value: Any) -> Any:
    """One document field's value as its column stores it (checked; see :func:`document_to_row`)."""
    column = _BY_FIELD[field]
    label = _ATTR_OF.get(field, field)
    if value is None:
        return Jsonb(None) if column.kind == "json" and field == "data" else None
    kind = column.kind
    if kind == "json":
        return json_value(label, value)
    if kind == "date":
        if not isinstance(value, datetime):
            raise InvalidInput(label, value, "must be a date")
        return to_millis(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise InvalidInput(label, value, "must be true or false")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int) or not _INT32[0] <= value <= _INT32[1]:
            raise InvalidInput(label, value, f"must be a whole number from {_INT32[0]} to {_INT32[1]}")
        return value
    if kind == "real":
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidInput(label, value, "must be a finite number")
        return float(value)
    if kind == "interval" and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # Node's column is text: milliseconds as digits
    if kind == "type" and value not in ("normal", "single"):
        raise InvalidInput(label, value, "must be 'normal' or 'single'")
    if not isinstance(value, str):
        raise InvalidInput(label, value, "must be a string")
    _check_text(label, value)
    if column.max_length is not None and len(value) > column.max_length:
        raise InvalidInput(label, value, f"holds at most {column.max_length} characters in PostgreSQL")
    return value


def _check_text(label: str, value: str) -> None:
    if "\x00" in value:
        raise InvalidInput(label, value, "PostgreSQL text cannot hold the NUL character (\\x00)")


def json_value(field: str, value: Any) -> Jsonb:
    """``value`` for a JSONB column, checked: only what JSON holds (objects with string keys, arrays,
    strings, finite numbers, true/false/null). Anything else is InvalidData naming its path."""
    _check_json(field, value)
    return Jsonb(value)


def _check_json(path: str, value: Any) -> None:
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidData(path, value, "JSON cannot hold NaN or infinity")
        return
    if isinstance(value, str):
        _check_text(path, value)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidData(f"{path}.{key!r}", item, "JSON object keys must be strings")
            _check_text(f"{path}.{key}", key)
            _check_json(f"{path}.{key}", item)
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_json(f"{path}.{index}", item)
        return
    raise InvalidData(
        path,
        value,
        f"JSON cannot hold a {type(value).__name__} (use str, int, float, bool, None, dict, list)",
    )
