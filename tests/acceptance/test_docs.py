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


def _python_block_after(text: str, heading: str) -> str:
    section = text.split(heading, 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_testing_guide_eager_example_runs_as_written(tmp_path: Path) -> None:
    """docs/testing.md's eager example, run by a pytest with its default settings (strict asyncio mode)."""
    pytest.importorskip("pytest_asyncio")
    code = _python_block_after((ROOT / "docs" / "testing.md").read_text(), "## Eager mode")
    (tmp_path / "test_eager_example.py").write_text(code)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not agendapy's asyncio_mode = "auto"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_eager_example.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "1 passed" in out.stdout
