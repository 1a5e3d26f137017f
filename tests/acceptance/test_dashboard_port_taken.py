"""``agendapy dashboard`` on a port another process listens on: one clear error, no sign-in link."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

JOB_MODULE = """
from agendapy import Agenda

agenda = Agenda()
"""


def test_a_taken_port_is_reported_before_any_sign_in_link(tmp_path: Path, db_url: str) -> None:
    (tmp_path / "jobmod.py").write_text(JOB_MODULE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENDAPY_")}
    with socket.socket() as holder:  # what a dashboard started earlier looks like from here
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        command = ["dashboard", "jobmod:agenda", "--mongo-url", db_url, "--port", str(port)]
        result = subprocess.run(
            [sys.executable, "-m", "agendapy", *command],
            cwd=tmp_path,
            env={**env, "COLUMNS": "300"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    # Before: a sign-in link for a token that the process holding the port refuses, then uvicorn's
    # "address already in use" and its exit status 3 (the CLI documents 0, 1 and 2).
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "already in use" in result.stderr
    assert "token=" not in result.stderr
    assert "Traceback" not in result.stderr
