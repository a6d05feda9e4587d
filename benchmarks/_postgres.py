"""A throwaway PostgreSQL schema for a benchmark run, so runs never see each other's rows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def fresh_schema(base_url: str) -> Iterator[tuple[str, Any]]:
    """Yield (a store URL whose search_path is a new schema, an autocommit admin connection);
    the schema is dropped on leaving. Raises psycopg.OperationalError if the server is down."""
    import psycopg

    schema = f"voltline_bench_{uuid.uuid4().hex[:12]}"
    admin = psycopg.connect(
        base_url.replace("postgresql+psycopg://", "postgresql://", 1), autocommit=True, connect_timeout=5
    )
    try:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield f"{base_url}{'&' if '?' in base_url else '?'}options=-csearch_path%3D{schema}", admin
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        admin.close()
