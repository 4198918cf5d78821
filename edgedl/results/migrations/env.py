"""Alembic's environment for edgedl's results database: migrations run on the connection
:class:`edgedl.results.ResultsDB` opens (never from a URL in a config file)."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
