"""Where the SecantusDB server is installed: :func:`find_server_command`."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

from ..errors import AgendaError

_SERVER_SCRIPT = "secantusd-py"
_SERVER_MODULE = "secantus"
_INSTALL_HINT = (
    "the embedded database needs SecantusDB: pip install 'agendapy[embedded]' "
    "(or set AGENDAPY_DATABASE_URL or AGENDAPY_MONGO_URL)"
)


def find_server_command() -> list[str]:
    """Return the command that runs the SecantusDB server.

    Looks for the ``secantusd-py`` script next to ``sys.executable`` (the active virtualenv), then on
    ``PATH``, then for a ``python -m secantus`` entry point.

    Raises:
        AgendaError: SecantusDB is not installed; the message says how to install it.
    """
    beside_python = shutil.which(_SERVER_SCRIPT, path=str(Path(sys.executable).parent))
    if beside_python:
        return [beside_python]
    on_path = shutil.which(_SERVER_SCRIPT)
    if on_path:
        return [on_path]
    # find_spec of the top-level package reads no module code; importing secantus costs ~100 ms.
    spec = importlib.util.find_spec(_SERVER_MODULE)
    if spec is not None and spec.submodule_search_locations is not None:
        for location in spec.submodule_search_locations:
            if (Path(location) / "__main__.py").is_file():
                return [sys.executable, "-m", _SERVER_MODULE]
    raise AgendaError(_INSTALL_HINT)
