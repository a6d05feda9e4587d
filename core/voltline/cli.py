"""The `voltline` command: look into a store, export it, manage its schema, list extensions.

Read commands open the store with `connect(url, create=False)`, so a mistyped path is an
error instead of a new empty database. Every `VoltlineError` becomes one red line on stderr
and exit code 1; a traceback means a bug in Voltline.
"""

import functools
import json
import logging
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TextIO, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.tree import Tree
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from . import __version__, _migrate, _plugins
from . import algorithms as _algorithms
from ._errors import NotFound, SchemaOutOfDate, StoreUnavailable, VoltlineError
from ._models import Attempt, Mode, Rollout, RolloutStatus, Span
from ._store import DEFAULT_URL, Store, connect, redact_url
from .proxy.cli import model_app, serve
from .server.cli import store_app

__all__ = ["app", "main"]

P = ParamSpec("P")
T = TypeVar("T")

URL_ENV = "VOLTLINE_STORE_URL"
EXPORT_FORMATS = ("jsonl",)
# Rollouts fetched per query by `export`: memory stays flat however big the store is.
EXPORT_PAGE = 200
# Spans fetched per query when counting a rollout's spans in `rollouts show`.
SPAN_PAGE = 2000
# Seconds a command keeps retrying a store server that refuses connections (HttpStore's
# default, 15 s, is for runners riding out a restart).
HTTP_PATIENCE = 2.0

EXAMPLES = """\
[bold]Examples[/bold]

  voltline db upgrade --url sqlite:///runs.db     create or migrate a store
  voltline rollouts list --status failed -n 20    the first 20 failed rollouts
  voltline rollouts show ro-1a2b3c                one rollout in detail
  voltline spans tree ro-1a2b3c                   its spans, per attempt
  voltline resources show system_prompt -v 2      version 2 of a resource
  voltline export -s succeeded -o runs.jsonl      rollouts, attempts, spans
  voltline plugins                                what was found, what works

The store is [bold]--url[/bold], else [bold]$VOLTLINE_STORE_URL[/bold], else sqlite:///voltline.db.
"""

app = typer.Typer(
    name="voltline",
    help="Voltline: inspect and export the rollouts, spans and resources your agents produce.",
    epilog=EXAMPLES,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,  # locals may hold a store URL with its password
    context_settings={"help_option_names": ["-h", "--help"]},
)
rollouts_app = typer.Typer(help="List rollouts, or show one in detail.", no_args_is_help=True)
spans_app = typer.Typer(help="Show the spans a rollout recorded.", no_args_is_help=True)
resources_app = typer.Typer(help="List resources and their versions.", no_args_is_help=True)
db_app = typer.Typer(help="Create, migrate and check the store's schema.", no_args_is_help=True)
INSPECT, STORE, MODELS, EXTEND = "Inspect the store", "Manage the store", "Models", "Extensions"
app.add_typer(rollouts_app, name="rollouts", rich_help_panel=INSPECT)
app.add_typer(spans_app, name="spans", rich_help_panel=INSPECT)
app.add_typer(resources_app, name="resources", rich_help_panel=INSPECT)
app.add_typer(db_app, name="db", rich_help_panel=STORE)
# --- commands defined in other modules are added here, one line each ---
app.add_typer(store_app, name="store", rich_help_panel=STORE)
app.command("serve", rich_help_panel=MODELS)(serve)
app.add_typer(model_app, name="model", rich_help_panel=MODELS)

Url = Annotated[
    str,
    typer.Option(
        "--url",
        envvar=URL_ENV,
        metavar="URL",
        help="Store URL: sqlite:///file.db or postgresql://user@host:port/db.",
        show_default=True,
    ),
]
StatusFilter = Annotated[
    list[RolloutStatus] | None,
    typer.Option(
        "--status",
        "-s",
        metavar="STATUS",
        help="Only rollouts in this status (queued, running, succeeded, failed, cancelled); repeatable.",
        show_default=False,
    ),
]
ModeFilter = Annotated[
    Mode | None,
    typer.Option("--mode", "-m", metavar="MODE", help="Only rollouts of this mode (train, val, test)."),
]

STATUS_STYLE = {
    "queued": "blue",
    "running": "yellow",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
    "timeout": "red",
    "unresponsive": "red",
}
KIND_STYLE = {
    "llm": "bold cyan",
    "tool": "bold yellow",
    "agent": "bold magenta",
    "chain": "bold blue",
    "retriever": "bold green",
    "message": "bold bright_blue",
    "reward": "bold bright_green",
    "exception": "bold red",
    "custom": "bold",
}


# output and errors -------------------------------------------------------------------
# Width when stdout is a file or a pipe and $COLUMNS is unset: wide enough that ids and
# table rows are never cut, so the output can be grepped (Rich would assume 80).
PIPE_WIDTH = 200


def _out() -> Console:
    # Made per command, not at import, so it follows the stdout of the moment (tests swap it).
    # markup=False: names, ids and errors come from users and plugins and must print as they are.
    console = Console(highlight=False, markup=False)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console = Console(highlight=False, markup=False, width=PIPE_WIDTH)
    return console


# Below this many columns, tables leave out their error column and list errors underneath.
WIDE = 110


def _errors_below(console: Console, errors: list[tuple[str, str | None]]) -> None:
    for what, error in errors:
        if error:
            console.print(Text(f"{what}: {_short(error, 200)}", style="red"))


def _table(title: str | None = None) -> Table:
    # No vertical rules: six columns of ids and timestamps then still fit 80 columns.
    return Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )


def _fail(message: str) -> typer.Exit:
    """Print `error: message` as one red line on stderr; the caller raises what this returns."""
    line = " ".join(message.split())  # driver messages carry newlines and tabs
    Console(stderr=True, highlight=False, soft_wrap=True).print(Text(f"error: {line}", style="red"))
    return typer.Exit(1)


def _friendly_errors(fn: Callable[P, T]) -> Callable[P, T]:
    """Turn Voltline's own errors into `error: ...` and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except VoltlineError as exc:
            raise _fail(str(exc)) from None

    return wrapper


@contextmanager
def _open_store(url: str, *, create: bool = False) -> Iterator[Store]:
    store = connect(url, create=create)
    if url.split("://", 1)[0].lower() in ("http", "https"):
        # Runners and emitters wait out a store server's restart; a person at a terminal
        # would rather hear at once that it is down.
        store.patience = HTTP_PATIENCE  # type: ignore[attr-defined]
    try:
        yield store
    finally:
        store.close()


def _write_stdout(text: str) -> None:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_broken_pipe()


def _quiet_broken_pipe() -> None:
    """The reader went away (`voltline export | head`): stop without a traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the final flush at exit does not complain
    except (OSError, ValueError, AttributeError):
        pass
    raise typer.Exit(0)


# formatting ---------------------------------------------------------------------------
def _value(x: Any) -> str:
    return str(getattr(x, "value", x))


def _when(ts: float | None, short: bool = False) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts).strftime("%m-%d %H:%M:%S" if short else "%Y-%m-%d %H:%M:%S")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _rollout_duration(r: Rollout | Attempt) -> str:
    start = getattr(r, "started_at", None)
    if start is None:
        return "-"
    if r.finished_at is not None:
        return _duration(r.finished_at - start)
    return f"{_duration(time.time() - start)} so far"


def _short(text: str | None, width: int = 60) -> str:
    if not text:
        return ""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # unreachable


def _status(status: Any) -> Text:
    name = _value(status)
    return Text(name, style=STATUS_STYLE.get(name, ""))


def _json(value: Any, limit: int | None = None) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    if limit is not None and len(text) > limit:
        text = text[:limit] + "\n… (truncated; `voltline export` has it all)"
    return text


def _statuses(status: list[RolloutStatus] | None) -> list[str] | None:
    return [s.value for s in status] if status else None


# rollouts -----------------------------------------------------------------------------
@rollouts_app.command("list")
@_friendly_errors
def rollouts_list(
    status: StatusFilter = None,
    mode: ModeFilter = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Show at most this many rollouts.")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many rollouts first (oldest first).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array instead of a table.")] = False,
    url: Url = DEFAULT_URL,
) -> None:
    """List rollouts, oldest first, with status, attempts, timing and error."""
    with _open_store(url) as store:
        rows = store.query_rollouts(
            status=_statuses(status), mode=mode.value if mode else None, limit=limit, offset=offset
        )
    if as_json:
        _write_stdout(
            json.dumps([r.model_dump(mode="json") for r in rows], indent=2, ensure_ascii=False) + "\n"
        )
        return
    console = _out()
    if not rows:
        console.print("no rollouts match" + (f" (at offset {offset})" if offset else ""))
        return
    wide = console.width >= WIDE
    table = _table(f"Rollouts in {redact_url(url)}")
    table.add_column("id", no_wrap=True, min_width=len(rows[0].rollout_id))
    table.add_column("status", no_wrap=True)
    table.add_column("mode", no_wrap=True)
    table.add_column("attempts", justify="right", no_wrap=True)
    table.add_column("created")
    table.add_column("duration", justify="right", no_wrap=True)
    if wide:
        table.add_column("error", overflow="fold")
    for r in rows:
        cells: list[Any] = [
            r.rollout_id,
            _status(r.status),
            _value(r.mode),
            f"{r.num_attempts}/{r.max_attempts}",
            _when(r.created_at, short=not wide),
            _rollout_duration(r),
        ]
        table.add_row(*cells, Text(_short(r.error), style="red")) if wide else table.add_row(*cells)
    console.print(table)
    if not wide:
        _errors_below(console, [(r.rollout_id, r.error) for r in rows])
    if len(rows) == limit:
        end = offset + len(rows)
        console.print(f"rollouts {offset + 1}-{end} shown; more may follow: --offset {end}", style="dim")


def _scan_spans(store: Store, rollout_id: str) -> Iterator[Span]:
    offset = 0
    while True:
        page = store.query_spans(rollout_id=rollout_id, limit=SPAN_PAGE, offset=offset)
        yield from page
        if len(page) < SPAN_PAGE:
            return
        offset += len(page)


@rollouts_app.command("show")
@_friendly_errors
def rollouts_show(
    rollout_id: Annotated[
        str, typer.Argument(metavar="ROLLOUT_ID", help="The rollout's id (see `voltline rollouts list`).")
    ],
    url: Url = DEFAULT_URL,
) -> None:
    """Show one rollout: its fields, attempts, resource versions, span counts and rewards."""
    with _open_store(url) as store:
        r = store.get_rollout(rollout_id)
        attempts = store.get_attempts(rollout_id)
        kinds: Counter[str] = Counter()
        per_attempt: Counter[str] = Counter()
        rewards: list[Span] = []
        for s in _scan_spans(store, rollout_id):
            kinds[_value(s.kind)] += 1
            per_attempt[s.attempt_id] += 1
            if _value(s.kind) == "reward":
                rewards.append(s)
    console = _out()

    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold", no_wrap=True)
    fields.add_column()
    fields.add_row("rollout", r.rollout_id)
    fields.add_row("status", _status(r.status))
    fields.add_row("mode", _value(r.mode))
    fields.add_row("attempts", f"{r.num_attempts} of at most {r.max_attempts}")
    fields.add_row("created", _when(r.created_at))
    fields.add_row("started", _when(r.started_at))
    fields.add_row("finished", _when(r.finished_at))
    fields.add_row("duration", _rollout_duration(r))
    fields.add_row("timeout", "-" if r.timeout is None else f"{r.timeout:g} s")
    fields.add_row("heartbeat timeout", "-" if r.heartbeat_timeout is None else f"{r.heartbeat_timeout:g} s")
    if r.error:
        fields.add_row("error", Text(r.error, style="red"))
    fields.add_row("input", Text(_json(r.input, limit=4000)))
    if r.metadata:
        fields.add_row("metadata", Text(_json(r.metadata, limit=4000)))
    console.print(fields)

    console.print()
    if attempts:
        wide = console.width >= WIDE
        table = _table("Attempts")
        table.add_column("#", justify="right", no_wrap=True)
        table.add_column("attempt", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("worker", overflow="fold")
        table.add_column("started")
        table.add_column("duration", justify="right", no_wrap=True)
        table.add_column("spans", justify="right", no_wrap=True)
        if wide:
            table.add_column("error", overflow="fold")
        for a in attempts:
            cells: list[Any] = [
                str(a.number),
                a.attempt_id,
                _status(a.status),
                a.worker_id or "-",
                _when(a.started_at, short=not wide),
                _rollout_duration(a),
                str(per_attempt[a.attempt_id]),
            ]
            table.add_row(*cells, Text(_short(a.error, 80), style="red")) if wide else table.add_row(*cells)
        console.print(table)
        if not wide:
            _errors_below(console, [(f"attempt {a.number}", a.error) for a in attempts])
    else:
        console.print("no attempts yet (queued)", style="dim")

    console.print()
    if r.resources:
        table = _table("Resource versions it ran with")
        table.add_column("resource")
        table.add_column("version", justify="right")
        for name, version in sorted(r.resources.items()):
            table.add_row(name, str(version))
        console.print(table)
    else:
        console.print("no resource versions recorded", style="dim")

    console.print()
    if kinds:
        table = _table(f"Spans ({sum(kinds.values())})")
        table.add_column("kind")
        table.add_column("count", justify="right")
        for kind, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])):
            table.add_row(Text(kind, style=KIND_STYLE.get(kind, "")), str(n))
        console.print(table)
    else:
        console.print("no spans recorded", style="dim")

    console.print()
    if rewards:
        numbers = {a.attempt_id: a.number for a in attempts}
        table = _table("Rewards")
        table.add_column("attempt", justify="right")
        table.add_column("name")
        table.add_column("value", justify="right")
        table.add_column("primary")
        table.add_column("for span", no_wrap=True)
        for s in rewards:
            attrs = s.attributes
            table.add_row(
                str(numbers.get(s.attempt_id, "?")),
                str(attrs.get("reward.name") or "-"),
                _reward_value(attrs.get("reward.value")),
                "yes" if attrs.get("reward.primary") else "no",
                str(attrs.get("reward.span_id") or "-"),
            )
        console.print(table)
    else:
        console.print("no rewards recorded", style="dim")


def _reward_value(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.1f}" if float(value).is_integer() else f"{value:.6g}"
    return "?" if value is None else str(value)


# spans --------------------------------------------------------------------------------
def _span_label(s: Span) -> Text:
    kind = _value(s.kind)
    label = Text()
    label.append(kind, style=KIND_STYLE.get(kind, ""))
    label.append(" ")
    label.append(s.name)
    if s.end_time is not None:
        label.append(f"  {(s.end_time - s.start_time) * 1000:,.1f} ms", style="dim")
    else:
        label.append("  (not ended)", style="dim")
    if kind == "reward":
        value = _reward_value(s.attributes.get("reward.value"))
        name = s.attributes.get("reward.name")
        label.append(f"  value={value}", style="bold bright_green")
        if name and str(name) not in s.name:  # emit_reward already names the span "reward NAME"
            label.append(f"  name={name}", style="bright_green")
        if s.attributes.get("reward.primary"):
            label.append("  (primary)", style="bright_green")
    if _value(s.status) == "error":
        label.append("  error", style="bold red")
        message = s.attributes.get("exception.message") or s.attributes.get("error.message")
        if message:
            label.append(f": {_short(str(message))}", style="red")
    return label


def _span_key(s: Span) -> tuple[float, int]:
    return (s.start_time, s.sequence if s.sequence is not None else 0)


def _grow(node: Tree, spans: list[Span]) -> None:
    """Nest `spans` under `node` by parent_id; a span whose parent is absent is a root."""
    ids = {s.span_id for s in spans}
    children: dict[str, list[Span]] = defaultdict(list)
    roots = []
    for s in spans:
        if s.parent_id is not None and s.parent_id in ids and s.parent_id != s.span_id:
            children[s.parent_id].append(s)
        else:
            roots.append(s)
    seen: set[str] = set()

    def attach(parent: Tree, top: list[Span]) -> None:
        # Iterative depth-first walk: a deep chain of spans must not hit the recursion limit.
        stack = [(parent, s) for s in sorted(top, key=_span_key, reverse=True)]
        while stack:
            under, s = stack.pop()
            if s.span_id in seen:
                continue
            seen.add(s.span_id)
            branch = under.add(_span_label(s))
            stack.extend((branch, c) for c in sorted(children[s.span_id], key=_span_key, reverse=True))

    attach(node, roots)
    # Spans whose parents form a cycle are reachable from no root: show them at the top.
    attach(node, [s for s in spans if s.span_id not in seen])


def _pick_attempt(attempts: list[Attempt], wanted: str, rollout_id: str) -> Attempt:
    for a in attempts:
        if wanted in (a.attempt_id, str(a.number)):
            return a
    have = ", ".join(f"{a.number} ({a.attempt_id})" for a in attempts) or "none"
    raise NotFound(f"rollout {rollout_id} has no attempt {wanted!r}; its attempts: {have}")


@spans_app.command("tree")
@_friendly_errors
def spans_tree(
    rollout_id: Annotated[str, typer.Argument(metavar="ROLLOUT_ID", help="The rollout whose spans to show.")],
    attempt: Annotated[
        str | None,
        typer.Option("--attempt", "-a", help="Only this attempt, by id or number (1, 2, ...)."),
    ] = None,
    url: Url = DEFAULT_URL,
) -> None:
    """Show a rollout's spans as a tree, one branch per attempt, nested by parent span."""
    with _open_store(url) as store:
        r = store.get_rollout(rollout_id)
        attempts = store.get_attempts(rollout_id)
        if attempt is not None:
            attempts = [_pick_attempt(attempts, attempt, rollout_id)]
            spans = store.query_spans(rollout_id=rollout_id, attempt_id=attempts[0].attempt_id)
        else:
            spans = store.query_spans(rollout_id=rollout_id)

    by_attempt: dict[str, list[Span]] = defaultdict(list)
    for s in spans:
        by_attempt[s.attempt_id].append(s)
    title = Text()
    title.append(f"rollout {r.rollout_id}  ", style="bold")
    title.append_text(_status(r.status))
    title.append(f"  {_value(r.mode)}  {len(spans)} span{'s' * (len(spans) != 1)}", style="dim")
    tree = Tree(title)
    known = [a.attempt_id for a in attempts]
    # Spans of an attempt the store does not list should not happen; show them rather than hide them.
    strays = [aid for aid in by_attempt if aid not in known]
    for a in attempts:
        label = Text()
        label.append(f"attempt {a.number}  ", style="bold")
        label.append(f"{a.attempt_id}  ")
        label.append_text(_status(a.status))
        n = len(by_attempt[a.attempt_id])
        label.append(
            f"  {_rollout_duration(a)}  worker {a.worker_id or '-'}  {n} span{'s' * (n != 1)}", style="dim"
        )
        if a.error:
            label.append(f"  {_short(a.error)}", style="red")
        node = tree.add(label)
        if by_attempt[a.attempt_id]:
            _grow(node, by_attempt[a.attempt_id])
        else:
            node.add(Text("no spans", style="dim"))
    for aid in strays:
        _grow(tree.add(Text(f"attempt {aid} (not in the store)", style="bold")), by_attempt[aid])
    if not attempts and not strays:
        tree.add(Text("no attempts yet (queued)", style="dim"))
    _out().print(tree)


# resources ----------------------------------------------------------------------------
@resources_app.command("list")
@_friendly_errors
def resources_list(url: Url = DEFAULT_URL) -> None:
    """List every resource at its latest version."""
    with _open_store(url) as store:
        resources = store.list_resources()
    console = _out()
    if not resources:
        console.print("no resources in the store")
        return
    table = _table("Resources (latest versions)")
    table.add_column("name")
    table.add_column("version", justify="right")
    table.add_column("kind", no_wrap=True)
    table.add_column("created", no_wrap=True)
    table.add_column("created by")
    table.add_column("artifact", justify="right", no_wrap=True)
    for rv in resources:
        table.add_row(
            rv.name,
            str(rv.version),
            _value(rv.kind),
            _when(rv.created_at),
            rv.created_by or "-",
            _size(rv.artifact_size),
        )
    console.print(table)


def _metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in sorted(metrics.items())) or "-"


@resources_app.command("show")
@_friendly_errors
def resources_show(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="The resource's name (see `voltline resources list`).")
    ],
    version: Annotated[
        int | None, typer.Option("--version", "-v", min=1, help="Show this version instead of the latest.")
    ] = None,
    url: Url = DEFAULT_URL,
) -> None:
    """Show one version of a resource (the latest by default): payload, metrics and history."""
    with _open_store(url) as store:
        rv = store.get_resource(name, version)
        history = store.resource_history(name)
    console = _out()
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold", no_wrap=True)
    fields.add_column()
    latest = history[-1].version if history else rv.version
    fields.add_row(
        "resource", f"{rv.name}  version {rv.version}" + ("  (latest)" if rv.version == latest else "")
    )
    fields.add_row("kind", _value(rv.kind))
    fields.add_row("created", _when(rv.created_at))
    fields.add_row("created by", rv.created_by or "-")
    if rv.artifact_hash:
        size = "-" if rv.artifact_size is None else f"{rv.artifact_size:,} bytes"
        fields.add_row("artifact", f"{size}  sha256 {rv.artifact_hash}")
    console.print(fields)

    console.print()
    console.print("Payload", style="bold")
    console.print(Text(_json(rv.payload)))

    console.print()
    if rv.metrics:
        table = _table("Metrics")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in sorted(rv.metrics.items()):
            table.add_row(key, f"{value:g}")
        console.print(table)
    else:
        console.print("no metrics", style="dim")

    console.print()
    table = _table(f"History of {rv.name}")
    table.add_column("version", justify="right")
    table.add_column("kind", no_wrap=True)
    table.add_column("created", no_wrap=True)
    table.add_column("created by")
    table.add_column("artifact", justify="right", no_wrap=True)
    table.add_column("metrics", overflow="fold")
    for h in history:
        table.add_row(
            f"{'▶ ' if h.version == rv.version else ''}{h.version}",
            _value(h.kind),
            _when(h.created_at),
            h.created_by or "-",
            _size(h.artifact_size),
            _metrics(h.metrics),
            style="bold" if h.version == rv.version else None,
        )
    console.print(table)


# export -------------------------------------------------------------------------------
def _records(store: Store, statuses: list[str] | None, mode: str | None) -> Iterator[dict[str, Any]]:
    """One dict per rollout (with its attempts and spans), fetched a page of rollouts at a time."""
    offset = 0
    while True:
        page = store.query_rollouts(status=statuses, mode=mode, limit=EXPORT_PAGE, offset=offset)
        for r in page:
            record = r.model_dump(mode="json")
            record["attempts"] = [a.model_dump(mode="json") for a in store.get_attempts(r.rollout_id)]
            record["spans"] = [s.model_dump(mode="json") for s in store.query_spans(rollout_id=r.rollout_id)]
            yield record
        if len(page) < EXPORT_PAGE:
            return
        offset += len(page)


def _write_records(records: Iterable[dict[str, Any]], out: TextIO) -> tuple[int, int]:
    rollouts = spans = 0
    for record in records:
        out.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
        rollouts += 1
        spans += len(record["spans"])
    out.flush()
    return rollouts, spans


@app.command("export", rich_help_panel=INSPECT)
@_friendly_errors
def export(
    format: Annotated[
        str, typer.Option("--format", "-f", help="Output format; jsonl (one JSON object per rollout) only.")
    ] = "jsonl",
    output: Annotated[
        str, typer.Option("--output", "-o", metavar="FILE", help="File to write, or - for standard output.")
    ] = "-",
    status: StatusFilter = None,
    mode: ModeFilter = None,
    url: Url = DEFAULT_URL,
) -> None:
    """Write rollouts with their attempts and spans as JSON lines, oldest first."""
    if format.lower() not in EXPORT_FORMATS:
        raise _fail(f"unsupported export format {format!r}: only {', '.join(EXPORT_FORMATS)} is supported")
    with _open_store(url) as store:
        records = _records(store, _statuses(status), mode.value if mode else None)
        if output == "-":
            try:
                _write_records(records, sys.stdout)
            except BrokenPipeError:
                _quiet_broken_pipe()
            return
        try:
            with open(output, "w", encoding="utf-8", newline="\n") as out:
                rollouts, spans = _write_records(records, out)
        except OSError as exc:
            raise _fail(f"cannot write {output}: {exc.strerror or exc}") from None
    Console(stderr=True, highlight=False, markup=False, soft_wrap=True).print(
        f"exported {rollouts} rollout{'s' * (rollouts != 1)} with {spans} span{'s' * (spans != 1)}"
        f" to {output}"
    )


# db -----------------------------------------------------------------------------------
def _missing_sqlite_file(url: str) -> bool:
    try:
        sa_url = make_url(url)
    except (ValueError, ArgumentError):
        return False
    return sa_url.get_backend_name() == "sqlite" and not Path(sa_url.database or "").exists()


@db_app.command("upgrade")
@_friendly_errors
def db_upgrade(url: Url = DEFAULT_URL) -> None:
    """Create the store's schema or migrate it to the newest revision."""
    head = _migrate.head_revision()
    where = redact_url(url)
    try:
        with _open_store(url):
            pass
    except SchemaOutOfDate as exc:
        if exc.newer:
            raise
        with _open_store(url, create=True):
            pass
        _out().print(
            f"upgraded {where} from revision {exc.current or 'none (no Voltline schema)'} to {head} (head)"
        )
        return
    except StoreUnavailable:
        if not _missing_sqlite_file(url):
            raise
        with _open_store(url, create=True):
            pass
        _out().print(f"created {where} at revision {head} (head)")
        return
    _out().print(f"{where} is already at revision {head} (head)")


@db_app.command("current")
@_friendly_errors
def db_current(url: Url = DEFAULT_URL) -> None:
    """Print the store's schema revision and the newest (head) revision."""
    head = _migrate.head_revision()
    problem = None
    try:
        with _open_store(url):
            current: str | None = head
    except SchemaOutOfDate as exc:
        current = exc.current
        problem = str(exc) if exc.newer else f"out of date: run `voltline db upgrade --url {redact_url(url)}`"
    console = _out()
    console.print(f"current: {current or 'none (no Voltline schema)'}")
    console.print(f"head:    {head}")
    if problem:
        console.print(problem, style="yellow")


# plugins and algorithms ---------------------------------------------------------------
@contextmanager
def _plugin_logs_muted() -> Iterator[None]:
    """Loading reports broken plugins through logging; here the table says it instead."""
    logger = logging.getLogger("voltline.plugins")
    before = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = before


def _yes_no(flag: bool) -> Text:
    return Text("yes", style="green") if flag else Text("no", style="red")


@app.command("plugins", rich_help_panel=EXTEND)
@_friendly_errors
def plugins() -> None:
    """List discovered plugins and the integrations they register."""
    with _plugin_logs_muted():
        infos = _plugins.plugins()
    console = _out()
    if not infos:
        console.print("no plugins found (entry-point group `voltline`)")
        return
    table = _table("Plugins")
    table.add_column("plugin", no_wrap=True)
    table.add_column("distribution")
    table.add_column("version", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("error", overflow="fold")
    style = {"loaded": "green", "failed": "red", "disabled": "yellow"}
    for info in infos:
        table.add_row(
            info.name,
            info.distribution or "-",
            info.version or "-",
            Text("ok" if info.loaded else info.status, style=style.get(info.status, "")),
            Text(info.error or "", style="red"),
        )
    console.print(table)

    integrations = [(info.name, i) for info in infos for i in info.integrations]
    console.print()
    if not integrations:
        console.print("no integrations registered", style="dim")
        return
    table = _table("Integrations")
    table.add_column("integration", no_wrap=True)
    table.add_column("plugin", no_wrap=True)
    table.add_column("available", no_wrap=True)
    table.add_column("error", overflow="fold")
    for plugin, i in integrations:
        table.add_row(i.name, plugin, _yes_no(i.available), Text(i.error or "", style="red"))
    console.print(table)


@app.command("algorithms", rich_help_panel=EXTEND)
@_friendly_errors
def algorithms() -> None:
    """List registered algorithms and where each one comes from."""
    with _plugin_logs_muted():
        infos = _algorithms.available()
    console = _out()
    if not infos:
        console.print("no algorithms registered")
        return
    table = _table("Algorithms")
    table.add_column("name", no_wrap=True)
    table.add_column("class", overflow="fold")
    table.add_column("source")
    table.add_column("status", no_wrap=True)
    table.add_column("error", overflow="fold")
    for info in infos.values():
        table.add_row(
            info.name,
            info.class_path,
            info.source,
            Text("ok", style="green") if info.error is None else Text("error", style="red"),
            Text(info.error or "", style="red"),
        )
    console.print(table)


# entry point --------------------------------------------------------------------------
def _show_version(value: bool) -> None:
    if value:
        _out().print(f"voltline {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print Voltline's version and exit.", is_eager=True, callback=_show_version
        ),
    ] = False,
) -> None:
    """Voltline: capture your agents' runs, inspect and export them, serve models and stores."""


def main() -> None:
    """Run the `voltline` command (the console-script entry point)."""
    app(prog_name="voltline")


if __name__ == "__main__":
    main()
