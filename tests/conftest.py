"""Shared fixtures: a store URL for every backend, and an open store on it.

PostgreSQL runs only when `VOLTLINE_TEST_POSTGRES_URL` names a server (for example
`postgresql://postgres@127.0.0.1:5432/test`); without it those tests skip, and with it an
unreachable server fails them. Each PostgreSQL test gets a schema of its own, created
before and dropped after, so tests can share one database without seeing each other's data.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

import voltline

POSTGRES_ENV = "VOLTLINE_TEST_POSTGRES_URL"


def _libpq_url(url: str) -> str:
    """The URL as psycopg takes it (no SQLAlchemy `+driver` suffix)."""
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme.split("+", 1)[0] in ("postgresql", "postgres") else url


def _with_search_path(url: str, schema: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    query.append(("options", f"-csearch_path={schema}"))
    return urlunsplit(parts._replace(query=urlencode(query)))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh, empty schema (dropped afterwards)."""
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"set {POSTGRES_ENV}=postgresql://user@host:port/db to run the PostgreSQL tests")
    import psycopg

    admin_url = _libpq_url(base)
    schema = f"t_{uuid.uuid4().hex[:16]}"
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.OperationalError as exc:
        pytest.fail(f"{POSTGRES_ENV} is set but the server is unreachable: {exc}")
    try:
        yield _with_search_path(base, schema)
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
            # A killed client's server process may still hold locks for a moment.
            conn.execute("SET lock_timeout = '30s'")
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
        "http-sqlite",
        pytest.param("http-postgresql", marks=pytest.mark.postgres),
    ]
)
def store_urls(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, str]]:
    """(store URL, URL of the database that holds its data), per backend. The `http-*` ones
    are a store server (in a thread, on a free port of 127.0.0.1) in front of a SQLite file
    or a PostgreSQL schema."""
    backend = request.param.removeprefix("http-")
    db_url = (
        f"sqlite:///{tmp_path}/store.db" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    )
    if not request.param.startswith("http-"):
        yield db_url, db_url
        return
    from voltline.server import ServerThread

    monkeypatch.setenv("VOLTLINE_SPOOL_DIR", str(tmp_path / "spool"))
    backing = voltline.connect(db_url)
    with ServerThread(backing) as server:
        yield server.url, db_url
    backing.close()


@pytest.fixture
def store_url(store_urls: tuple[str, str]) -> str:
    return store_urls[0]


@pytest.fixture
def database_url(store_urls: tuple[str, str]) -> str:
    """The SQL database behind `store_url`, for tests that look at it directly."""
    return store_urls[1]


@pytest.fixture
def store(store_url: str) -> Iterator[voltline.Store]:
    s = voltline.connect(store_url)
    try:
        yield s
    finally:
        s.close()
