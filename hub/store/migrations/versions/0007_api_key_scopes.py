"""api key scopes: scopes, an optional network allow-list, expiry and revocation

Keys made before scopes existed become ``admin``, as they could do everything.
A name is unique only among keys not revoked, so a rotated key's successor
takes its name while the revoked row stays for the record.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# SQLite's unique constraint on name has no name; batch mode reflects it under this one.
_NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}
_LIVE = sa.text("revoked_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None, naming_convention=_NAMING) as batch_op:
        batch_op.add_column(sa.Column("scopes", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("allowed_networks", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
    api_keys = sa.table("api_keys", sa.column("scopes", sa.JSON()))
    op.execute(api_keys.update().values(scopes=["admin"]))
    with op.batch_alter_table("api_keys", schema=None, naming_convention=_NAMING) as batch_op:
        batch_op.alter_column("scopes", existing_type=sa.JSON(), nullable=False)
        batch_op.drop_constraint(_name_constraint(), type_="unique")
    op.create_index(
        "uq_api_keys_live_name",
        "api_keys",
        ["name"],
        unique=True,
        sqlite_where=_LIVE,
        postgresql_where=_LIVE,
    )


def downgrade() -> None:
    # Fails while a revoked key and a live one share a name (after a rotation).
    op.drop_index("uq_api_keys_live_name", table_name="api_keys")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_api_keys_name", ["name"])
        batch_op.drop_column("revoked_at")
        batch_op.drop_column("expires_at")
        batch_op.drop_column("allowed_networks")
        batch_op.drop_column("scopes")


def _name_constraint() -> str:
    """The unique constraint on ``name``: PostgreSQL named it; SQLite's gets ``_NAMING``'s name."""
    for constraint in sa.inspect(op.get_bind()).get_unique_constraints("api_keys"):
        if constraint["column_names"] == ["name"] and constraint["name"]:
            return str(constraint["name"])
    return "uq_api_keys_name"
