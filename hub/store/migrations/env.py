"""Alembic environment: runs against the URL handed over by hub.store.db.migrate."""

from alembic import context

from hub.store.db import engine
from hub.store.models import Base

url = context.config.attributes["url"]
with engine(url).connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
