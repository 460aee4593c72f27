"""Alembic environment: runs migrations on the engine handed over by models.db.upgrade."""

from alembic import context
from sqlmodel import SQLModel

import models.tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from models.db import owned_by_app

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # `alembic` run by hand: fall back to DATABASE_URL
    import os

    from models.db import make_engine

    engine = make_engine(os.environ.get("DATABASE_URL", "sqlite:///./emailsync.db"))

with engine.connect() as connection:
    # A batch migration rebuilds a SQLite table: copy, DROP, rename. With foreign keys on, the DROP first
    # deletes every row, and ON DELETE CASCADE takes the rows of the tables that reference it along
    # (rebuilding `message` would empty message_location and message_address). SQLite ignores this pragma
    # inside a transaction, so it is set on the driver's connection before the migration's transaction
    # begins, the keys are checked before that transaction commits, and the setting is put back after.
    sqlite = connection.dialect.name == "sqlite"
    driver = connection.connection.driver_connection if sqlite else None
    foreign_keys = driver.execute("PRAGMA foreign_keys").fetchone()[0] if driver is not None else 0
    if driver is not None:
        driver.execute("PRAGMA foreign_keys=OFF")
    try:
        with connection.begin():
            context.configure(
                connection=connection,
                target_metadata=SQLModel.metadata,
                render_as_batch=True,  # SQLite cannot ALTER most things in place
                include_name=owned_by_app,  # autogenerate leaves Procrastinate's tables alone
            )
            context.run_migrations()
            if sqlite and foreign_keys:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                if broken:
                    raise RuntimeError(f"the migration broke foreign keys: {broken[:10]}")
    finally:
        if driver is not None:
            driver.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
