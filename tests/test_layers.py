"""The layers of docs/architecture.md: imports point down (bot → flows → sync → models), only bot/ talks to Slack."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SLACK = {"slack_bolt", "slack_sdk"}
WEB = {"starlette", "uvicorn"}
# What each package must not import (bot/, the composition root, may import everything).
FORBIDDEN = {
    "flows": {"bot"} | SLACK | WEB,
    "sync": {"bot", "flows"} | SLACK | WEB,
    "models": {"bot", "flows", "sync"} | SLACK | WEB,
}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """Top-level packages a module imports (function-level imports included), with line numbers."""
    found: set[tuple[str, int]] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {(alias.name.partition(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.module.partition(".")[0], node.lineno))
    return found


def violations(package: str) -> list[str]:
    """Every import of `package` that its layer forbids, as "file:line imports name"."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name, line in sorted(imported_packages(path)):
            if name in FORBIDDEN[package]:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_down_and_only_bot_talks_to_slack(package: str) -> None:
    assert violations(package) == [], "see docs/architecture.md, 'Layers'"


def test_the_check_sees_function_level_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from bot.settings import Settings\n    import slack_sdk.web\n")
    assert {name for name, _ in imported_packages(module)} == {"os", "bot", "slack_sdk"}
