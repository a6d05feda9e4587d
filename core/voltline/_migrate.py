"""Schema migrations (Alembic), run on an open SQLAlchemy connection."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

__all__ = ["current_revision", "head_revision", "known", "upgrade"]

_SCRIPTS = str(Path(__file__).with_name("_migrations"))


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", _SCRIPTS)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    return ScriptDirectory.from_config(_config()).get_current_head() or ""


def known(revision: str) -> bool:
    """Whether `revision` is one of this Voltline's migrations (not one from a newer release)."""
    try:
        return ScriptDirectory.from_config(_config()).get_revision(revision) is not None
    except Exception:  # alembic raises several kinds for an unknown id
        return False


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(connection: Connection) -> str:
    """Bring the schema to the newest revision; safe when several processes start at once."""
    if connection.dialect.name == "postgresql":
        # Workers starting together would race to create the same tables.
        connection.execute(text("SELECT pg_advisory_xact_lock(727271)"))
    if current_revision(connection) != head_revision():  # re-read under the lock
        command.upgrade(_config(connection), "head")
    return head_revision()
