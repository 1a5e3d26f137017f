"""``python -m agendapy.cli``: the same as the ``agendapy`` command."""

from . import main

main()
