"""The dependency arrows of the brief, checked on the source: bot -> engine, storage; engine -> models,
storage (claim loop only); storage and models import none of the others; nobody imports bot."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "engine", "storage", "models")
ALLOWED: dict[str, set[str]] = {
    "bot": {"bot", "engine", "storage", "models"},
    "engine": {"engine", "models", "storage"},
    "storage": {"storage"},
    "models": {"models"},
}


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_follow_the_arrows(package: str) -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(_imported_packages(path) - ALLOWED[package])
        for path in (ROOT / package).rglob("*.py")
        if _imported_packages(path) - ALLOWED[package]
    }
    assert wrong == {}


def test_only_the_claim_loop_side_of_engine_needs_storage() -> None:
    """The GPU worker process must not pull in storage, SQLAlchemy or the chat side."""
    code = (
        "import sys, engine.worker, engine.supervisor, engine.messages, engine.backend;"
        "names = ('storage', 'sqlalchemy', 'bot', 'discord', 'telegram');"
        "bad = sorted(m for m in names if m in sys.modules);"
        "print(','.join(bad))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == ""
