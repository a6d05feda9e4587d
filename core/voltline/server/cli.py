"""`voltline store serve`: the store server from the command line."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["store_app"]

store_app = typer.Typer(help="Serve a store over HTTP for runners on other machines.", no_args_is_help=True)


@store_app.command("serve")
def serve_command(
    db: Annotated[
        str,
        typer.Option(
            "--db", envvar="VOLTLINE_STORE_URL", metavar="URL",
            help="The store behind the server: sqlite:///file.db or postgresql://user@host:port/db.",
        ),
    ] = "sqlite:///voltline.db",
    host: Annotated[
        str, typer.Option(help="Interface to listen on; beyond loopback a token is required.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 4747,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="VOLTLINE_STORE_TOKEN", show_envvar=True,
            help="Bearer token clients must send (required unless --host is loopback).",
        ),
    ] = None,
    max_body_mb: Annotated[int, typer.Option(help="Largest request body accepted, in MiB.")] = 256,
    workers: Annotated[int, typer.Option(help="Server processes (PostgreSQL: several scale out).")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:  # fmt: skip
    """Serve the store at --db over HTTP: every Store operation, and OTLP traces at /v1/traces.

    Clients connect with voltline.connect("http://HOST:PORT", token=...).
    """
    from .._errors import VoltlineError
    from .run import serve

    try:
        serve(
            db, host=host, port=port, token=token, max_body_bytes=max_body_mb << 20, workers=workers,
            log_level=log_level,
        )  # fmt: skip
    except VoltlineError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None
