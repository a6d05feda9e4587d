"""`voltline serve` and `voltline model init`, registered on the main `voltline` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["model_app", "serve"]

model_app = typer.Typer(help="Make models for the LLM proxy.", no_args_is_help=True)


def serve(
    model: Annotated[
        Path | None,
        typer.Option(
            "--model", "-m", help="A Hugging Face model directory to run locally with transformers."
        ),
    ] = None,
    upstream: Annotated[
        str | None,
        typer.Option(
            help="Base URL of an OpenAI-compatible server to forward to (e.g. vLLM's http://host:8000/v1)."
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            help="Model name clients ask for (default: the directory name, or the upstream's own names)."
        ),
    ] = None,
    adapter: Annotated[
        str | None,
        typer.Option(
            help="Resource name of the `lora_adapter` versions to serve "
            "(local backend); NAME is the latest, NAME:base the base, "
            "NAME:3 version 3."
        ),
    ] = None,
    tokenizer: Annotated[
        Path | None, typer.Option(help="Tokenizer directory used when the upstream returns no token ids.")
    ] = None,
    upstream_model: Annotated[
        str | None, typer.Option(help="Model name to send upstream (default: the client's).")
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            envvar="VOLTLINE_STORE_URL",
            help="Store URL for spans and adapters (default sqlite:///voltline.db).",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    max_tokens: Annotated[int, typer.Option(help="Completion length when a request sets none.")] = 256,
    max_batch: Annotated[int, typer.Option(help="Most sequences decoded together (local backend).")] = 16,
    device: Annotated[
        str | None, typer.Option(help="torch device (default: cuda if available, else cpu).")
    ] = None,
) -> None:
    """Run the OpenAI-compatible LLM proxy that returns and records exact token ids.

    Every response carries the prompt and completion token ids and logprobs; calls from agents
    given `http://HOST:PORT/rollout/RID/attempt/AID/v1` are recorded as `llm` spans.
    """
    import uvicorn

    from .. import connect
    from . import create_app

    if (model is None) == (upstream is None):
        raise typer.BadParameter("give exactly one of --model DIR or --upstream URL")
    store = connect(url)
    if model is not None:
        from .localserve import LocalBackend

        backend = LocalBackend(
            model,
            name=name,
            store=store,
            adapter=adapter,
            default_max_tokens=max_tokens,
            max_batch=max_batch,
            device=device,
        )
    else:
        from .upstream import UpstreamBackend

        backend = UpstreamBackend(upstream, tokenizer=tokenizer, model=upstream_model, name=name)  # type: ignore[arg-type]
    typer.echo(
        f"voltline proxy ({backend.kind}) on http://{host}:{port}/v1; agents in a rollout use "
        f"http://{host}:{port}/rollout/<rollout_id>/attempt/<attempt_id>/v1"
    )
    uvicorn.run(create_app(backend, store), host=host, port=port, log_level="info")


@model_app.command("init")
def model_init(
    directory: Annotated[Path, typer.Argument(help="Where to write the model (created if missing).")],
    hidden_size: Annotated[int, typer.Option(help="Hidden size.")] = 64,
    layers: Annotated[int, typer.Option(help="Transformer layers.")] = 2,
    vocab_size: Annotated[int, typer.Option(help="Byte-level BPE vocabulary size (at most).")] = 512,
    context_length: Annotated[int, typer.Option(help="Maximum sequence length.")] = 1024,
    seed: Annotated[int, typer.Option(help="Random seed for the weights.")] = 0,
) -> None:
    """Create a tiny random model with its own tokenizer; needs no download.

    A Qwen2 model with a byte-level BPE tokenizer trained on the spot and a chat template with
    tool calls: good for tests, demos and CPU-sized RL.
    """
    from .modelinit import init_model

    heads = max(1, hidden_size // 16)
    out = init_model(
        directory,
        hidden_size=hidden_size,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=max(1, heads // 2),
        intermediate_size=hidden_size * 2,
        vocab_size=vocab_size,
        context_length=context_length,
        seed=seed,
    )
    typer.echo(f"wrote a tiny model to {out}; serve it with: voltline serve --model {out}")
