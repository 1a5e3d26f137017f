"""``python -m agendapy.embedded DATA_DIR``: the keeper process of a shared embedded server."""

from __future__ import annotations

import sys

from .keeper import _main

if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
