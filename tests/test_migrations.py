"""The Alembic migrations build exactly the schema `_schema.py` describes."""

from __future__ import annotations

import sqlite3

import pytest
from _sql import sql_engine
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import voltline
from voltline import _migrate
from voltline._schema import metadata


def test_migrated_schema_matches_the_models(store_url, database_url):
    voltline.connect(store_url).close()
    engine = sql_engine(database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == [], f"schema drift between _schema.py and the migrations: {diff}"
        assert _migrate.current_revision(conn) == _migrate.head_revision()
    engine.dispose()


def test_old_schema_is_reported_not_silently_used(tmp_path):
    path = tmp_path / "old.db"
    voltline.connect(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:  # pretend the database predates every migration
        conn.execute("DELETE FROM alembic_version")
    with pytest.raises(voltline.SchemaOutOfDate, match="voltline db upgrade"):
        voltline.connect(f"sqlite:///{path}", create=False)
