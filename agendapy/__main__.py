"""``python -m agendapy``: the same as the ``agendapy`` command."""

from .cli import main

main()
