"""sign in with Google and Microsoft: OAuth tokens on accounts, sign-ins in progress on setup sessions

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("email_account", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "auth_kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False, server_default="password"
            )
        )
        batch_op.add_column(sa.Column("oauth_provider", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True))
        batch_op.add_column(sa.Column("oauth_access_encrypted", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("oauth_refresh_encrypted", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("oauth_expires_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("oauth_scope", sa.Text(), nullable=True))
    with op.batch_alter_table("setup_session", schema=None) as batch_op:
        batch_op.add_column(sa.Column("oauth_state_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch_op.add_column(sa.Column("oauth_flow_encrypted", sa.Text(), nullable=True))
        batch_op.create_index(batch_op.f("ix_setup_session_oauth_state_hash"), ["oauth_state_hash"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("setup_session", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_setup_session_oauth_state_hash"))
        batch_op.drop_column("oauth_flow_encrypted")
        batch_op.drop_column("oauth_state_hash")
    with op.batch_alter_table("email_account", schema=None) as batch_op:
        batch_op.drop_column("oauth_scope")
        batch_op.drop_column("oauth_expires_at")
        batch_op.drop_column("oauth_refresh_encrypted")
        batch_op.drop_column("oauth_access_encrypted")
        batch_op.drop_column("oauth_provider")
        batch_op.drop_column("auth_kind")
