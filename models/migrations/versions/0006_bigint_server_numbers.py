"""bigint server numbers

Numbers the IMAP server gives are 64-bit: UIDVALIDITY, UIDs, UIDNEXT and MESSAGES reach 2^32-1,
MODSEQ 2^63-1, Gmail's X-GM-MSGID is a 64-bit id, RFC822.SIZE an unsigned 32-bit number. On PostgreSQL
INTEGER stops at 2^31-1; SQLite stores 64 bits either way, but the declared type follows the models.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# table -> [(column, nullable)]
COLUMNS = {
    "folder": [
        ("uidvalidity", True),
        ("setup_uidnext", True),
        ("fwd_uid", False),
        ("backfill_hi", False),
        ("highestmodseq", True),
        ("last_uidnext", True),
        ("last_messages", True),
    ],
    "message": [("gm_msgid", True), ("size", False)],
    "message_location": [("uidvalidity", False), ("uid", False)],
}


def _alter(from_type: sa.types.TypeEngine, to_type: sa.types.TypeEngine) -> None:
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, nullable in columns:
                batch_op.alter_column(name, existing_type=from_type, type_=to_type, existing_nullable=nullable)


def upgrade() -> None:
    _alter(sa.Integer(), sa.BigInteger())


def downgrade() -> None:
    # Fails on PostgreSQL once a value above 2^31-1 is stored.
    _alter(sa.BigInteger(), sa.Integer())
