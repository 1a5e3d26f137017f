"""The list of deliberate differences from Node and the table in docs/migrate/from-agenda.md agree."""

from __future__ import annotations

import re
from pathlib import Path

from agendapy.schedule.divergences import DIVERGENCES

DOCS = Path(__file__).parents[3] / "docs" / "migrate" / "from-agenda.md"


def test_docs_table_lists_exactly_the_divergences_in_the_code() -> None:
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Next-run computation: where agendapy differs from Node on purpose", 1)[1]
    section = section.split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([a-z0-9-]+)` \|", section, flags=re.MULTILINE)
    assert documented == [divergence.id for divergence in DIVERGENCES]
