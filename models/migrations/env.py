"""Alembic environment: runs migrations on the engine handed over by models.db.upgrade."""

from alembic import context
from sqlmodel import SQLModel

import models.tables  # noqa: F401  (registers the tables on SQLModel.metadata)

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # `alembic` run by hand: fall back to DATABASE_URL
    import os

    from models.db import make_engine

    engine = make_engine(os.environ.get("DATABASE_URL", "sqlite:///./emailsync.db"))

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things in place
    )
    context.run_migrations()
