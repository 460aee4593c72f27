"""find and the people digest: bulk flag, thread and address indexes, digest settings, ignored addresses

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Adding columns and indexes never rebuilds a table on SQLite (ALTER TABLE ADD COLUMN, CREATE INDEX).
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bulk", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.create_index("ix_message_team_thread", ["team_id", "thread_key"], unique=False)
        batch_op.create_index("ix_message_account_internal", ["account_id", "internal_date"], unique=False)
    with op.batch_alter_table("message_address", schema=None) as batch_op:
        # The new index starts with email, so it serves every look-up the old one did.
        batch_op.create_index("ix_message_address_email_message", ["email", "message_id"], unique=False)
        batch_op.drop_index("ix_message_address_email")
    with op.batch_alter_table("user_settings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("digest_day", sa.Integer(), nullable=True, server_default="0"))
        batch_op.add_column(sa.Column("digest_hour", sa.Integer(), nullable=False, server_default="9"))
        batch_op.add_column(sa.Column("timezone", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
    op.create_table(
        "ignored_address",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("team_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("user_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("email", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("team_id", "user_id", "email", name="uq_ignored_address"),
    )
    op.create_table(
        "people_digest",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("team_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("user_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("period", sa.Date(), nullable=False),
        sa.Column("window_start", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("window_end", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("suggestions", sa.Text(), nullable=False),
        sa.Column("slack_channel", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("slack_ts", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("team_id", "user_id", "period", name="uq_people_digest_period"),
    )


def downgrade() -> None:
    op.drop_table("people_digest")
    op.drop_table("ignored_address")
    with op.batch_alter_table("user_settings", schema=None) as batch_op:
        batch_op.drop_column("timezone")
        batch_op.drop_column("digest_hour")
        batch_op.drop_column("digest_day")
    with op.batch_alter_table("message_address", schema=None) as batch_op:
        batch_op.create_index("ix_message_address_email", ["email"], unique=False)
        batch_op.drop_index("ix_message_address_email_message")
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_index("ix_message_account_internal")
        batch_op.drop_index("ix_message_team_thread")
        batch_op.drop_column("bulk")
