"""sweep flag and created index

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("email_account", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sweep_pending", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.create_index("ix_message_account_created", ["account_id", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_index("ix_message_account_created")
    with op.batch_alter_table("email_account", schema=None) as batch_op:
        batch_op.drop_column("sweep_pending")
