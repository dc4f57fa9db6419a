"""activity lists: notifications and events in (created_at, id) order, for cursor pages

Revision ID: 0015
Revises: 0014
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # GET /v1/notifications and GET /v1/events page in this order: without
    # these, every page sorts the whole table.
    op.create_index("ix_notifications_created", "notifications", ["created_at", "id"])
    op.create_index("ix_events_created", "events", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_events_created", table_name="events")
    op.drop_index("ix_notifications_created", table_name="notifications")
