"""The zero-setup default database: SecantusDB run as a child process (see :mod:`agendapy.embedded.server`)."""

from .server import DEFAULT_LINGER, EmbeddedLease, EmbeddedServer, ensure_embedded_server, find_server_command

__all__ = ["DEFAULT_LINGER", "EmbeddedLease", "EmbeddedServer", "ensure_embedded_server", "find_server_command"]
