"""send from Slack with open and click tracking: sent emails, tokens, events, the workspace switch

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30

"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "team_settings",
        sa.Column("team_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("tracking_enabled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("team_id"),
    )
    op.create_table(
        "sent_email",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("team_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("user_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("email_account.id", ondelete="CASCADE"), nullable=False),
        sa.Column("compose_key", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("message_id", sqlmodel.sql.sqltypes.AutoString(length=998), nullable=False),
        sa.Column("thread_key", sqlmodel.sql.sqltypes.AutoString(length=998), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("recipients", sa.Text(), nullable=False),
        sa.Column("delivered", sa.Text(), nullable=False),
        sa.Column("failed", sa.Text(), nullable=False),
        sa.Column("links", sa.Text(), nullable=False),
        sa.Column("track_opens", sa.Boolean(), nullable=False),
        sa.Column("track_links", sa.Boolean(), nullable=False),
        sa.Column("notify", sa.Boolean(), nullable=False),
        sa.Column("per_recipient", sa.Boolean(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("sent_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("opens", sa.Integer(), nullable=False),
        sa.Column("clicks", sa.Integer(), nullable=False),
        sa.Column("last_open_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("slack_channel", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("slack_ts", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("compose_key", name="uq_sent_email_compose_key"),
    )
    op.create_index("ix_sent_email_account_msgid", "sent_email", ["account_id", "message_id"])
    op.create_index("ix_sent_email_owner", "sent_email", ["team_id", "user_id", "sent_at"])
    op.create_table(
        "track_token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sent_email_id", sa.Integer(), sa.ForeignKey("sent_email.id", ondelete="CASCADE"), nullable=False),
        sa.Column("token", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("recipient", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token"),
    )
    op.create_index("ix_track_token_sent_email_id", "track_token", ["sent_email_id"])
    op.create_table(
        "track_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sent_email_id", sa.Integer(), sa.ForeignKey("sent_email.id", ondelete="CASCADE"), nullable=False),
        sa.Column("token_id", sa.Integer(), sa.ForeignKey("track_token.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("link", sa.Integer(), nullable=True),
        sa.Column("human", sa.Boolean(), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("user_agent", sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
        sa.Column("at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_track_event_at", "track_event", ["at"])
    op.create_index("ix_track_event_sent_email_id", "track_event", ["sent_email_id"])


def downgrade() -> None:
    op.drop_table("track_event")
    op.drop_table("track_token")
    op.drop_table("sent_email")
    op.drop_table("team_settings")
