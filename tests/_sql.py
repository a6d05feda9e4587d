"""Looking into a store's database directly, outside the Store API (tests only)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa


def sql_engine(database_url: str) -> sa.Engine:
    url = sa.make_url(database_url)
    if url.get_backend_name() == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return sa.create_engine(url)


def scalar(database_url: str, query: str) -> Any:
    """Run one SQL query on the database and return its single value."""
    engine = sql_engine(database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(query)).scalar()
    finally:
        engine.dispose()
