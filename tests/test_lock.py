"""requirements/lock.txt is in step with pyproject.toml: every dependency pinned, at a version it allows."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _locked() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines():
        found = re.match(r"([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;]+)", line)
        if found:
            pins[canonicalize_name(found[1])] = Version(found[2])
    return pins


def test_every_dependency_is_locked_at_a_version_pyproject_allows():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]
    locked = _locked()
    missing = [str(r) for r in wanted if canonicalize_name(r.name) not in locked]
    outside = [
        f"{r} (locked {locked[canonicalize_name(r.name)]})"
        for r in wanted
        if canonicalize_name(r.name) in locked and locked[canonicalize_name(r.name)] not in r.specifier
    ]
    assert not missing and not outside, f"run scripts/lock: not locked {missing}, locked outside the range {outside}"


def test_ci_installs_from_the_lock_and_the_lock_names_its_command():
    assert "pip install -q --disable-pip-version-check -r requirements/lock.txt" in (ROOT / ".ci" / "run").read_text()
    assert "--no-deps -e ." in (ROOT / ".ci" / "run").read_text()
    assert "#    scripts/lock" in (ROOT / "requirements" / "lock.txt").read_text()
