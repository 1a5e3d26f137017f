"""The documentation site builds with no warnings (``mkdocs build --strict``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_docs_build_strict(tmp_path: Path) -> None:
    if (
        shutil.which("mkdocs") is None
        and subprocess.run([sys.executable, "-c", "import mkdocs"], capture_output=True).returncode
    ):
        pytest.skip("mkdocs is not installed (pip install --group test)")
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    assert (tmp_path / "site" / "index.html").exists()
