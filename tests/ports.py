"""Loopback ports for servers that another process binds later (stdlib only: pg_server.py uses it)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

__all__ = ["free_port"]


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A loopback TCP port that nothing listens on now.

    Chosen at random below the kernel's ephemeral range, from which every outgoing connection and every
    bind to port 0 on this machine draw their ports: a port found with a bind to 0 could be handed to
    one of them (other tests, other test runs) before the server the port is meant for binds it.
    """
    high = min(_ephemeral_low(), 65536) - 1
    low = max(high - 12_000, 10_000)
    if low >= high:  # an unusual range: fall back to a port the kernel picks
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    for _ in range(100):
        port = random.randint(low, high)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use: try another
            return port
    raise RuntimeError(f"no free loopback port between {low} and {high}")
