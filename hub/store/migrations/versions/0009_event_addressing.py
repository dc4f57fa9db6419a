"""event addressing: the recipients and topics an event names, and a notification's recipient id

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("recipients", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("topics", sa.JSON(), nullable=True))
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("recipient_id", sa.String(200), nullable=True))
        batch_op.create_index("ix_notifications_recipient_id", ["recipient_id"])


def downgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_recipient_id")
        batch_op.drop_column("recipient_id")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("topics")
        batch_op.drop_column("recipients")
