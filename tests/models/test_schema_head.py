"""HEAD_REVISION, which start-up compares instead of loading Alembic, is Alembic's real head."""

from __future__ import annotations

from alembic.script import ScriptDirectory

from models.db import HEAD_REVISION, alembic_config, make_engine, schema_revision, upgrade, upgrade_if_behind


def test_head_revision_is_alembics_head():
    engine = make_engine("sqlite://")
    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    assert head == HEAD_REVISION, f"a migration was added: set models.db.HEAD_REVISION to {head!r}"


def test_upgrade_if_behind_migrates_a_new_database_once(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    assert schema_revision(engine) is None
    assert upgrade_if_behind(engine) is True
    assert schema_revision(engine) == HEAD_REVISION
    assert upgrade_if_behind(engine) is False  # up to date: Alembic is not run again
    upgrade(engine)  # and the real upgrade agrees there is nothing to do
    assert schema_revision(engine) == HEAD_REVISION
    engine.dispose()
