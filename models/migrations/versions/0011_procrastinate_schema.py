"""the job queue of the many-machines backend: Procrastinate's schema, applied once (PostgreSQL only)

Procrastinate's `apply_schema` is not idempotent (a second run fails on existing types), so this
migration is what applies it exactly once; SQLite never runs the procrastinate backend, so there it is
a no-op. The schema is the one of the pinned Procrastinate version (pyproject.toml); moving to a newer
version means a new migration with Procrastinate's own migration files for that step.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30

"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# Two `db upgrade` at once on different machines: the second waits here, then finds the schema there.
UPGRADE_LOCK_KEY = 0x656D_5F01


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    from procrastinate.schema import SchemaManager

    bind.exec_driver_sql("SET LOCAL lock_timeout = '60s'")
    bind.exec_driver_sql(f"SELECT pg_advisory_xact_lock({UPGRADE_LOCK_KEY})")
    if bind.exec_driver_sql("SELECT to_regclass('procrastinate_jobs')").scalar() is not None:
        return  # applied by a concurrent upgrade that committed while this one waited for the lock
    # The driver's own execute, with no parameters: the schema holds `%` in its functions, which a
    # parameterised execute would read as placeholders. Same connection, same transaction.
    bind.connection.driver_connection.execute(SchemaManager.get_schema())  # type: ignore[union-attr]


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    bind.connection.driver_connection.execute(  # type: ignore[union-attr]
        """
        DROP TABLE IF EXISTS procrastinate_periodic_defers, procrastinate_events, procrastinate_jobs,
            procrastinate_workers CASCADE;
        DO $$
        DECLARE f record;
        BEGIN
            FOR f IN SELECT p.oid::regprocedure AS sig FROM pg_proc p
                     JOIN pg_namespace n ON n.oid = p.pronamespace
                     WHERE n.nspname = current_schema() AND p.proname LIKE 'procrastinate\\_%'
            LOOP
                EXECUTE 'DROP FUNCTION ' || f.sig || ' CASCADE';
            END LOOP;
        END $$;
        DROP TYPE IF EXISTS procrastinate_job_to_defer_v1, procrastinate_job_event_type,
            procrastinate_job_status CASCADE;
        """
    )
