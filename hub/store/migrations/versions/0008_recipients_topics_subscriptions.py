"""recipients, topics and run-time subscriptions, with a version counter workers watch

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _timestamps() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "recipients",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("email", sa.String(500), nullable=True),
        sa.Column("phone", sa.String(50), nullable=True),
        sa.Column("slack", sa.String(100), nullable=True),
        sa.Column("locale", sa.String(35), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("preferences", sa.JSON(), nullable=False),
        *_timestamps(),
    )
    op.create_table(
        "topic_members",
        sa.Column("topic", sa.String(200), primary_key=True),
        sa.Column(
            "recipient_id",
            sa.String(200),
            sa.ForeignKey("recipients.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_topic_members_recipient_id", "topic_members", ["recipient_id"])
    op.create_table(
        "subscriptions",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("definition", sa.JSON(), nullable=False),
        *_timestamps(),
    )
    op.create_table(
        "config_versions",
        sa.Column("kind", sa.String(40), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("config_versions")
    op.drop_table("subscriptions")
    op.drop_index("ix_topic_members_recipient_id", table_name="topic_members")
    op.drop_table("topic_members")
    op.drop_table("recipients")
