"""failure alerts: alert groups with their events, silences; notifications name their group

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

OPEN = "status != 'resolved'"


def upgrade() -> None:
    op.create_table(
        "alert_groups",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("subscription", sa.String(200), nullable=False),
        sa.Column("group_key", sa.String(64), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("messages", sa.JSON(), nullable=False),
        sa.Column("first_event_id", sa.String(40), sa.ForeignKey("events.id"), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_notify_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("notified_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("notifications_sent", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("first_notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("escalation_step", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("silence_id", sa.String(40), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sa.String(200), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "uq_alert_groups_open",
        "alert_groups",
        ["subscription", "group_key"],
        unique=True,
        sqlite_where=sa.text(OPEN),
        postgresql_where=sa.text(OPEN),
    )
    op.create_index("ix_alert_groups_status_next", "alert_groups", ["status", "next_notify_at"])
    op.create_index("ix_alert_groups_created", "alert_groups", ["created_at", "id"])
    op.create_table(
        "alert_events",
        sa.Column("group_id", sa.String(40), sa.ForeignKey("alert_groups.id"), primary_key=True),
        sa.Column("event_id", sa.String(40), sa.ForeignKey("events.id"), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "silences",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("matchers", sa.JSON(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_silences_ends_at", "silences", ["ends_at"])
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("alert_id", sa.String(40), nullable=True))
        batch_op.create_index("ix_notifications_alert_id", ["alert_id"])


def downgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_alert_id")
        batch_op.drop_column("alert_id")
    op.drop_index("ix_silences_ends_at", table_name="silences")
    op.drop_table("silences")
    op.drop_table("alert_events")
    op.drop_index("ix_alert_groups_created", table_name="alert_groups")
    op.drop_index("ix_alert_groups_status_next", table_name="alert_groups")
    op.drop_index("uq_alert_groups_open", table_name="alert_groups")
    op.drop_table("alert_groups")
