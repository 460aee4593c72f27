"""idle_watch: which worker process holds each account's INBOX IDLE watch (a lease)

Revision ID: 0012
Revises: 0010
Create Date: 2026-11-30

"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idle_watch",
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("email_account.id", ondelete="CASCADE"), nullable=False),
        sa.Column("owner", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("lease_until", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("token", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("account_id"),
    )


def downgrade() -> None:
    op.drop_table("idle_watch")
