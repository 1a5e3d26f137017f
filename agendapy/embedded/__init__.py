"""The zero-setup default database: SecantusDB run as a child process.

:class:`EmbeddedServer` starts ``secantusd-py`` on a loopback port over a data directory, waits until it
answers ``hello`` and stops it again; the process that starts it owns it (tests, benchmarks). A small
watchdog process per server stops it when the owner dies without running exit hooks.

:func:`ensure_embedded_server` is what the CLI and ``Agenda``'s default use: every process on the machine
that uses one data directory shares one server, which belongs to none of them. A detached keeper process
(``python -m agendapy.embedded``) starts it and stops it a little after the last user has left. Each user
holds a *lease*, a shared ``flock`` on ``users.lock`` that the kernel releases however the user exits;
the keeper stops the server only while it holds that lock exclusively, so no user can be handed a server
that is stopping. The server keeps its port for the life of the data directory, so a user whose server
went away (killed, crashed) starts a new one on the same URL and its driver reconnects by itself.

The server requires SCRAM-SHA-256 authentication: the keeper creates a user with a random password at
the first start and keeps it in ``server.json``, which, like everything in the directory, only the
owner can read (files 0600, directories 0700).

Layout of a data directory::

    server.json      port, URL and credentials; pid of the live server (0 when stopped)
    server.log       the keeper's and the server's output
    secantusd.toml   passed with --config so no user-wide SecantusDB config file changes our server
    storage/         the WiredTiger files
    .lock            serialises check-then-start in ensure_embedded_server
    users.lock       leases of the processes using the server

Modules: ``server`` (:class:`EmbeddedServer`, the child process), ``watchdog`` (the script that stops
it when its owner dies), ``command`` (where SecantusDB is installed), ``lease``
(:func:`ensure_embedded_server`, :class:`EmbeddedLease`), ``keeper`` (the shared server's keeper
process; ``__main__`` runs it), ``state`` (the data directory, ``server.json``, credentials and
permissions), ``probe`` (pids, ports, ``hello``) and ``locks`` (``flock``).
"""

from .command import find_server_command
from .lease import EmbeddedLease, ensure_embedded_server
from .server import EmbeddedServer
from .state import DEFAULT_LINGER

__all__ = [
    "DEFAULT_LINGER",
    "EmbeddedLease",
    "EmbeddedServer",
    "ensure_embedded_server",
    "find_server_command",
]
