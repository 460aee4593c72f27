"""The bot package's import graph: no cycles, and no function-level imports that would hide one."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Modules that import inside functions on purpose, for start-up time. Nothing in bot/ imports bot.cli, so
# its lazy imports cannot hide a cycle; the others name each deferred import.
LAZY_MODULES = {"bot.cli"}  # each command imports what it uses: `emailsync --help` loads typer alone
LAZY_FOR_START_UP = {
    ("bot.worker", "bot.slack_app"),  # a worker without Slack settings never loads Bolt
    ("bot.worker", "bot.digest"),
    ("bot.worker", "sync.clock_election"),  # the procrastinate backend only
    ("bot.worker", "sync.procrastinate_backend"),
    ("bot.services", "sync.engine"),  # commands that do not sync skip the engine's imports
    ("bot.web", "slack_bolt.adapter.socket_mode"),  # Socket Mode only when SLACK_APP_TOKEN is set
    ("bot.web", "bot.socket_mode"),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.Module, *, top_level: bool) -> list[str]:
    """The modules a file imports (`from a import b` counts as a and as a.b, since b may be a module)."""
    nodes = (
        tree.body if top_level else [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    )
    found: list[str] = []
    for node in nodes:
        for child in [node] if top_level else ast.walk(node):
            if isinstance(child, ast.Import):
                found += [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                found.append(child.module)
                found += [f"{child.module}.{alias.name}" for alias in child.names]
    return found


def _bot_modules() -> dict[str, ast.Module]:
    return {_module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted((ROOT / "bot").rglob("*.py"))}


def test_no_bot_module_imports_the_command_line() -> None:
    """bot.cli may import lazily only because nothing imports it back."""
    importers = [name for name, tree in _bot_modules().items() if "bot.cli" in _imports(tree, top_level=True)]
    importers += [name for name, tree in _bot_modules().items() if "bot.cli" in _imports(tree, top_level=False)]
    assert [n for n in importers if n not in ("bot.cli", "bot.__main__")] == []


def test_the_bot_package_has_no_import_cycle() -> None:
    modules = _bot_modules()
    graph = {
        name: {m for m in _imports(tree, top_level=True) if m in modules and m != name}
        for name, tree in modules.items()
    }
    # A package's __init__ is imported before its modules: an edge to the package is an edge to __init__.
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> None:
        if name in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(name) :], name]))
        if name in done:
            return
        path.append(name)
        for target in sorted(graph[name]):
            visit(target)
        path.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


def test_no_function_level_imports_outside_the_start_up_list() -> None:
    lazy = {
        (name, target)
        for name, tree in _bot_modules().items()
        for target in _imports(tree, top_level=False)
        if target.split(".")[0] in ("bot", "flows", "sync", "models", "slack_bolt")
    }
    # `from a import b` yields (a) and (a.b): an entry allows both.
    unexpected = {
        (n, t)
        for n, t in lazy
        if n not in LAZY_MODULES
        and (n, t) not in LAZY_FOR_START_UP
        and (n, t.rpartition(".")[0]) not in LAZY_FOR_START_UP
    }
    assert not unexpected, (
        f"function-level imports (move them to the top; a cycle means a module is misplaced): {sorted(unexpected)}"
    )
