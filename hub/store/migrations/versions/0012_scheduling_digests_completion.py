"""scheduling, digests, cancellation and completion

Events: ``deliver_at``, ``cancellation_key`` and ``cancelled_at`` (set by
``POST /v1/cancel``, so an event cancelled before routing routes to nothing),
``completed_at`` and ``counts`` (completion counters). Notifications:
``not_before`` (held as ``scheduled`` until then), ``digest_id`` (the digest
a ``digested`` one was folded into) and ``is_digest``, with at most one open
(``scheduled``) digest per subscription, channel and recipient. Config
versions keep a ``snapshot`` of what was loaded (``hub reload``).

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deliver_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("cancellation_key", sa.String(200), nullable=True))
        batch_op.add_column(sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("counts", sa.JSON(), nullable=True))
        batch_op.create_index("ix_events_cancellation_key", ["cancellation_key"])
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("not_before", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("digest_id", sa.String(40), nullable=True))
        batch_op.add_column(
            sa.Column("is_digest", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.create_index("ix_notifications_digest_id", ["digest_id"])
    op.create_index(
        "uq_notifications_open_digest",
        "notifications",
        ["subscription", "channel", "recipient"],
        unique=True,
        sqlite_where=sa.text("is_digest AND status = 'scheduled'"),
        postgresql_where=sa.text("is_digest AND status = 'scheduled'"),
    )
    op.create_index(
        "ix_notifications_scheduled",
        "notifications",
        ["not_before"],
        sqlite_where=sa.text("status = 'scheduled'"),
        postgresql_where=sa.text("status = 'scheduled'"),
    )
    with op.batch_alter_table("config_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("snapshot", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("config_versions", schema=None) as batch_op:
        batch_op.drop_column("snapshot")
    op.drop_index("ix_notifications_scheduled", table_name="notifications")
    op.drop_index("uq_notifications_open_digest", table_name="notifications")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_digest_id")
        batch_op.drop_column("is_digest")
        batch_op.drop_column("digest_id")
        batch_op.drop_column("not_before")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_cancellation_key")
        batch_op.drop_column("counts")
        batch_op.drop_column("completed_at")
        batch_op.drop_column("cancelled_at")
        batch_op.drop_column("cancellation_key")
        batch_op.drop_column("deliver_at")
