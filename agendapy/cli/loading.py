"""How a command gets its Agenda and its input: TARGET imported, or a bare Agenda on --database-url
(env ``AGENDAPY_DATABASE_URL``; ``--mongo-url``/``AGENDAPY_MONGO_URL`` still work) and --collection or
--table; the options shared by commands; JSON options parsed; agendapy's and the drivers' errors turned
into one-line messages and exit statuses.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from pymongo.errors import PyMongoError

from ..agenda import Agenda
from ..errors import AgendaError, UnknownJob
from ..log_config import LEVELS
from . import output as out

__all__ = [
    "CLI_NAME",
    "EXIT_BAD_INPUT",
    "EXIT_ERROR",
    "BadInput",
    "CliError",
    "Source",
    "criteria_options",
    "database_options",
    "database_url_option",
    "describe_criteria",
    "json_option",
    "level_option",
    "load_agenda",
    "parse_criteria",
    "parse_json",
    "with_agenda",
]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

EXIT_ERROR = 1
EXIT_BAD_INPUT = 2

#: PostgreSQL's SQLSTATE for "relation does not exist".
_UNDEFINED_TABLE = "42P01"

#: ``lastModifiedBy`` of the changes made by the CLI without a TARGET.
CLI_NAME = "agendapy-cli"


class CliError(click.ClickException):
    """An error reported in one line on stderr; exit status 1."""

    def show(self, file: Any = None) -> None:
        out.error(self.format_message())


class BadInput(CliError):
    """Bad input reported in one line on stderr; exit status 2."""

    exit_code = EXIT_BAD_INPUT


# -- loading an Agenda -----------------------------------------------------------------------------------


def load_agenda(target: str) -> Agenda:
    """Import ``module:attribute`` (an Agenda, or a function returning one) from the current directory."""
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise click.BadParameter(
            f"{target!r}: expected MODULE:ATTRIBUTE, e.g. myapp.jobs:agenda", param_hint="TARGET"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise click.BadParameter(
                f"cannot import module {module_name!r}: {exc}", param_hint="TARGET"
            ) from None
        raise BadInput(f"cannot import TARGET {target!r}: {_one_line(exc)}") from None
    except SyntaxError as exc:
        where = f" ({exc.filename}, line {exc.lineno})" if exc.filename else ""
        raise BadInput(f"cannot import TARGET {target!r}: {type(exc).__name__}: {exc.msg}{where}") from None
    except Exception as exc:
        # The application's own code failed while importing: one line that names it, not a traceback
        # through importlib (run `python -c "import MODULE"` to see the whole story).
        raise BadInput(f"cannot import TARGET {target!r}: {_one_line(exc)}") from None
    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise click.BadParameter(
                f"module {module_name!r} has no attribute {attribute!r}", param_hint="TARGET"
            ) from None
    if not isinstance(obj, Agenda) and callable(obj):
        try:
            obj = obj()
            if inspect.isawaitable(obj):
                obj = asyncio.run(_await(obj))
        except Exception as exc:
            raise BadInput(f"TARGET {target!r} raised while building the Agenda: {_one_line(exc)}") from None
    if not isinstance(obj, Agenda):
        raise click.BadParameter(
            f"{target!r} is {type(obj).__name__}, not an agendapy.Agenda", param_hint="TARGET"
        )
    return obj


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (the first line of the message)."""
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__


async def _await(value: Any) -> Any:
    return await value


@dataclass(frozen=True)
class Source:
    """Where a command finds its Agenda: TARGET's, or a bare one on ``database_url`` and ``collection``
    (MongoDB) or ``table`` (PostgreSQL)."""

    target: str | None = None
    database_url: str | None = None
    collection: str | None = None
    #: A worker name for ``lastModifiedBy`` (default: TARGET's own, or "agendapy-cli").
    name: str | None = None
    table: str | None = None

    def open(self, *, indexes: bool = False) -> Agenda:
        """Load TARGET (pointed at ``database_url`` if given) or build a bare Agenda (no handlers) that
        creates the indexes (or the PostgreSQL tables) only when ``indexes`` is set."""
        if not self.target:
            return Agenda(
                self.database_url or None,
                collection=self.collection or "agendaJobs",
                table=self.table,
                name=self.name or CLI_NAME,
                ensure_index=indexes,
            )
        for option, value in (("--collection", self.collection), ("--table", self.table)):
            if value:
                raise click.BadParameter(
                    "applies only without --target (TARGET's Agenda names its own collection or table)",
                    param_hint=option,
                )
        agenda = load_agenda(self.target)
        if self.database_url:
            agenda.set_database(self.database_url)
        if self.name:
            agenda.name = self.name
        return agenda


def _guard(call: Callable[[], T]) -> T:
    """Run ``call`` and turn agendapy's and the driver's errors into one-line errors and exit statuses."""
    try:
        return call()
    except (click.ClickException, click.Abort):
        raise
    except UnknownJob as exc:
        raise BadInput(str(exc)) from None
    except ValueError as exc:
        raise BadInput(f"invalid input: {exc}") from None
    except (AgendaError, PyMongoError) as exc:
        raise CliError(_brief(str(exc))) from None
    except Exception as exc:
        # psycopg's errors (the PostgreSQL driver is optional, so not imported here to be named).
        if type(exc).__module__.split(".", 1)[0] in ("psycopg", "psycopg_pool"):
            lines = str(exc).strip().splitlines()
            message = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
            if getattr(exc, "sqlstate", None) == _UNDEFINED_TABLE:
                # Read-only commands create no tables: say what would.
                message += (
                    " (nothing was scheduled in this database yet: a worker, `agendapy schedule` or "
                    "Agenda.connect() creates the tables; or check --table and the URL's search_path)"
                )
            raise CliError(message) from None
        raise


def _brief(text: str) -> str:
    for marker in (" (configured timeouts", ", Timeout:"):
        text = text.split(marker, 1)[0]
    return text


def with_agenda(source: Source, work: Callable[[Agenda], Awaitable[T]], *, indexes: bool = False) -> T:
    """Open the Agenda, run ``work`` on it in a fresh event loop, close it."""

    async def body(agenda: Agenda) -> T:
        try:
            return await work(agenda)
        finally:
            await agenda.close()

    return _guard(lambda: asyncio.run(body(source.open(indexes=indexes))))


# -- shared options ------------------------------------------------------------------------------------------


def database_url_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--database-url`` (env ``AGENDAPY_DATABASE_URL``) and its older name ``--mongo-url`` (env
    ``AGENDAPY_MONGO_URL``), handed to the command as one ``database_url``.

    Either takes a MongoDB or a PostgreSQL URL. A URL given on the command line wins over the
    environment, and ``AGENDAPY_DATABASE_URL`` over ``AGENDAPY_MONGO_URL``; both options given with
    different URLs is bad input (which one was meant cannot be told)."""

    @click.option(
        "--mongo-url",
        envvar="AGENDAPY_MONGO_URL",
        metavar="URL",
        help="The older name of --database-url (env AGENDAPY_MONGO_URL); either scheme works.",
    )
    @click.option(
        "--database-url",
        envvar="AGENDAPY_DATABASE_URL",
        metavar="URL",
        help="mongodb:// or postgresql:// URL (default: $AGENDAPY_DATABASE_URL, else $AGENDAPY_MONGO_URL, "
        "else TARGET's own, else the embedded database).",
    )
    @functools.wraps(fn)
    def wrapper(*args: Any, database_url: str | None, mongo_url: str | None, **kwargs: Any) -> Any:
        return fn(*args, database_url=_chosen_url(database_url, mongo_url), **kwargs)

    return wrapper


def _chosen_url(database_url: str | None, mongo_url: str | None) -> str | None:
    context = click.get_current_context(silent=True)

    def typed(param: str) -> bool:
        source = context.get_parameter_source(param) if context is not None else None
        return source is click.core.ParameterSource.COMMANDLINE

    if typed("database_url") and typed("mongo_url") and database_url != mongo_url:
        raise BadInput("--database-url and --mongo-url name different databases: give one of them")
    if database_url and typed("database_url"):
        return database_url
    if mongo_url and typed("mongo_url"):
        return mongo_url
    # Both from the environment (or neither given): the newer variable first.
    return database_url or mongo_url or None


def json_option(fn: F) -> F:
    """``--json``: print the result as one JSON document."""
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(fn)


def database_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--target``, ``--database-url`` (or ``--mongo-url``), ``--collection`` and ``--table``, handed
    to the command as ``source``."""

    @database_url_option
    @click.option(
        "--table",
        metavar="NAME",
        help="The jobs table when there is no --target (PostgreSQL; default: agenda_jobs).",
    )
    @click.option(
        "--collection",
        metavar="NAME",
        help="The jobs collection when there is no --target (MongoDB; default: agendaJobs).",
    )
    @click.option(
        "--target",
        "-t",
        metavar="MODULE:ATTR",
        help="Your Agenda (its database, collection and definitions); optional here.",
    )
    @functools.wraps(fn)
    def wrapper(
        *args: Any,
        target: str | None,
        database_url: str | None,
        collection: str | None,
        table: str | None,
        **kwargs: Any,
    ) -> Any:
        return fn(*args, source=Source(target, database_url, collection, table=table), **kwargs)

    return wrapper


def criteria_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--data",
        "data_json",
        metavar="JSON",
        help="Only jobs whose data match (an object matches by its fields).",
    )(fn)
    fn = click.option("--name", "names", multiple=True, help="Jobs of this name (repeatable).")(fn)
    return click.option("--id", "ids", multiple=True, help="The job with this id (repeatable).")(fn)


def parse_json(text: str | None, option: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"invalid value for {option}: not valid JSON ({exc})") from None
    except RecursionError:
        raise BadInput(f"invalid value for {option}: JSON nested too deeply to read") from None


def parse_criteria(ids: tuple[str, ...], names: tuple[str, ...], data_json: str | None) -> dict[str, Any]:
    criteria: dict[str, Any] = {}
    if ids:
        criteria["ids"] = list(ids)
    if names:
        criteria["names"] = list(names)
    if data_json is not None:
        criteria["data"] = parse_json(data_json, "--data")
    if not criteria:
        raise click.UsageError("say which jobs: --id, --name or --data")
    return criteria


def describe_criteria(criteria: dict[str, Any]) -> str:
    parts = [f"{key}={json.dumps(value, default=str)}" for key, value in criteria.items()]
    return ", ".join(parts)


def level_option(default: str) -> Callable[[F], F]:
    """``--log-level``, defaulting to ``default``."""
    return click.option(
        "--log-level",
        default=default,
        show_default=True,
        type=click.Choice(LEVELS, case_sensitive=False),
        help="Log level.",
    )
