"""The architecture contracts of pyproject.toml ([tool.importlinter]) hold: the core never
imports the GUI or Qt, its layers import only downward, scene stands apart, no cycles."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.is_file():
        pytest.fail(f"{lint} missing: install the test extra (pip install -e '.[test]')")
    r = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    kept = re.search(r"Contracts: (\d+) kept, (\d+) broken", out)
    assert kept and int(kept.group(1)) >= 5 and kept.group(2) == "0", out


def test_no_module_of_the_core_imports_qt_or_the_gui_at_line_start():
    """The check the issue states (`grep -rE "^\\s*(from|import) (app|PySide6|pyqtgraph)"`),
    over the files themselves rather than the import graph."""
    pattern = re.compile(r"^\s*(from|import) (app|PySide6|pyqtgraph)\b", re.MULTILINE)
    hits = [str(p.relative_to(ROOT)) for p in (ROOT / "tinyserve_core").rglob("*.py")
            if pattern.search(p.read_text(encoding="utf-8"))]
    assert not hits
