"""worker heartbeats in the store, for deployments without Redis (RabbitMQ only)

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "worker_heartbeats",
        sa.Column("node", sa.String(200), primary_key=True),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("queues", sa.Text(), nullable=False, server_default=""),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_worker_heartbeats_at", "worker_heartbeats", ["at"])


def downgrade() -> None:
    op.drop_index("ix_worker_heartbeats_at", table_name="worker_heartbeats")
    op.drop_table("worker_heartbeats")
