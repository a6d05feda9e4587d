"""The `voltline` command, run through Typer's CliRunner against a real SQLite store.

The plugin and algorithm listings use the installed test distribution
(`pip install -e tests/fixtures/voltline-testdist`, done by scripts/setup.sh).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner, Result

import voltline
from voltline import _migrate, _plugins, cli

runner = CliRunner()


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Never read the developer's store, never create ./voltline.db in the repository.
    for var in (
        "VOLTLINE_STORE_URL",
        "COLUMNS",
        "FORCE_COLOR",
        "NO_COLOR",
        "TTY_COMPATIBLE",
        "TTY_INTERACTIVE",
        "VOLTLINE_PLUGINS",
        "VOLTLINE_DISABLE_PLUGINS",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(cli.app, list(args), env=env)


def ok(*args: str, env: dict[str, str] | None = None) -> str:
    result = run(*args, env=env)
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result.stdout


def failed(result: Result, *expected: str) -> str:
    """Assert `result` is the one-line `error: ...` on stderr with exit code 1; return that line."""
    assert result.exit_code == 1, (result.output, result.exception)
    # A clean exit (SystemExit), not an exception Typer caught for us.
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.stdout == ""
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def line_with(output: str, text: str) -> str:
    matches = [line for line in output.splitlines() if text in line]
    assert len(matches) == 1, (text, matches, output)
    return matches[0]


@dataclass
class Demo:
    url: str
    solved: voltline.RolloutContext
    crashed: voltline.RolloutContext
    retried: str  # two attempts: the first failed, the second succeeded
    first_attempt: str
    second_attempt: str
    queued: str


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    url = f"sqlite:///{tmp_path}/t.db"
    store = voltline.connect(url)
    store.put_resource(
        "system_prompt", "prompt_template", {"template": "v1"}, created_by="apo/step-0",
        metrics={"val_reward": 0.5},
    )  # fmt: skip
    store.put_resource(
        "system_prompt", "prompt_template", {"template": "You are a careful calculator."},
        created_by="apo/step-1", metrics={"val_reward": 0.75},
    )  # fmt: skip
    store.put_resource(
        "policy", "lora_adapter", {"base_model": "tiny"}, artifact=b"\0" * 2048, created_by="grpo/3"
    )

    t0 = time.time()
    with voltline.rollout(
        {"question": "2+2"}, store=store, resources={"system_prompt": 2}, metadata={"split": "dev"}
    ) as solved:
        with voltline.span("solver", kind="agent"):
            # emitted first (lower sequence) but started later: the tree orders by start time
            voltline.emit_llm(model="tiny", name="late-llm", start_time=t0 + 2, end_time=t0 + 2.25)
            voltline.emit_llm(model="tiny", name="early-llm", start_time=t0 + 1, end_time=t0 + 1.5)
            with voltline.span("calc-chain", kind="chain"):
                voltline.emit_tool("calculator", arguments={"expr": "2+2"}, result=4, start_time=t0 + 3,
                                   end_time=t0 + 3.1)  # fmt: skip
        voltline.emit_reward(1.0)
        voltline.emit_reward(0.25, name="format")
    # a span whose parent was never stored is shown as a root
    store.add_spans([
        {"span_id": "orphan-span", "rollout_id": solved.rollout_id, "attempt_id": solved.attempt_id,
         "parent_id": "never-stored", "kind": "custom", "name": "orphan", "start_time": t0 + 10,
         "end_time": t0 + 10.001},
    ])  # fmt: skip

    with (
        pytest.raises(RuntimeError),
        voltline.rollout({"question": "1/0"}, store=store, mode="val") as crashed,
    ):
        voltline.emit_tool("calculator", arguments={"expr": "1/0"}, error="ZeroDivisionError")
        raise RuntimeError("calculator exploded")

    retried = store.enqueue({"question": "retry me"}, max_attempts=2)
    [first] = store.claim("worker-a")
    with voltline.rollout(store=store, rollout_id=retried.rollout_id, attempt_id=first.attempt.attempt_id):
        voltline.emit_llm(model="tiny", name="first-try")
    store.finish_attempt(first.attempt.attempt_id, "failed", "model timed out")
    [second] = store.claim("worker-b")
    with voltline.rollout(store=store, rollout_id=retried.rollout_id, attempt_id=second.attempt.attempt_id):
        voltline.emit_llm(model="tiny", name="second-try")
        voltline.emit_reward(0.5)
    store.finish_attempt(second.attempt.attempt_id, "succeeded")

    queued = store.enqueue({"question": "3*3"}, mode="test", max_attempts=3)
    try:
        yield Demo(
            url, solved, crashed, retried.rollout_id, first.attempt.attempt_id, second.attempt.attempt_id,
            queued.rollout_id,
        )  # fmt: skip
    finally:
        store.close()


# help ----------------------------------------------------------------------------------
def test_top_level_help_lists_commands_and_examples() -> None:
    out = ok("--help")
    assert "Usage: voltline" in out
    for command in ("rollouts", "spans", "resources", "export", "db", "plugins", "algorithms"):
        assert re.search(rf"│ {command}\s", out), command
    assert "Examples" in out
    assert "voltline spans tree ro-1a2b3c" in out
    assert "VOLTLINE_STORE_URL" in out


def test_every_command_and_option_has_help() -> None:
    def walk(command, path: str) -> Iterator[tuple[str, object]]:  # type: ignore[no-untyped-def]
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, f"{path} {name}")

    seen = []
    for path, command in walk(get_command(cli.app), "voltline"):
        seen.append(path)
        assert (command.help or "").strip(), f"{path} has no help"
        assert "\n" not in command.help.strip().split("\n\n")[0], f"{path}: first help line wraps"
        for param in command.params:
            assert (getattr(param, "help", None) or "").strip(), f"{path} {param.name} has no help"
    expected = {"voltline rollouts list", "voltline spans tree", "voltline db upgrade", "voltline export"}
    assert expected <= set(seen)


def test_store_commands_take_url_from_the_environment() -> None:
    out = ok("rollouts", "list", "--help")
    assert "--url" in out and "VOLTLINE_STORE_URL" in out and "sqlite:///voltline.db" in out


def test_version() -> None:
    assert ok("--version").strip() == f"voltline {voltline.__version__}"


# rollouts ------------------------------------------------------------------------------
def test_rollouts_list_table(demo: Demo) -> None:
    out = ok("rollouts", "list", "--url", demo.url)
    ids = [demo.solved.rollout_id, demo.crashed.rollout_id, demo.retried, demo.queued]
    positions = [out.index(i) for i in ids]
    assert positions == sorted(positions), "oldest first"
    solved = line_with(out, demo.solved.rollout_id)
    assert re.search(r"succeeded\s+train\s+1/1\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+\d+ ms", solved), solved
    crashed = line_with(out, demo.crashed.rollout_id)
    assert "failed" in crashed and " val " in crashed and "RuntimeError: calculator exploded" in crashed
    assert re.search(r"succeeded\s+train\s+2/2", line_with(out, demo.retried))
    assert re.search(r"queued\s+test\s+0/3\s+\S+ \S+\s+-", line_with(out, demo.queued))


def test_rollouts_list_filters_and_pages(demo: Demo) -> None:
    out = ok("rollouts", "list", "--url", demo.url, "--status", "failed", "--status", "queued")
    assert demo.crashed.rollout_id in out and demo.queued in out
    assert demo.solved.rollout_id not in out and demo.retried not in out

    out = ok("rollouts", "list", "--url", demo.url, "--mode", "val")
    assert demo.crashed.rollout_id in out and demo.solved.rollout_id not in out

    out = ok("rollouts", "list", "--url", demo.url, "--limit", "2", "--offset", "1")
    assert [demo.crashed.rollout_id in out, demo.retried in out] == [True, True]
    assert demo.solved.rollout_id not in out and demo.queued not in out
    assert "more may follow: --offset 3" in out

    assert "no rollouts match" in ok("rollouts", "list", "--url", demo.url, "--status", "cancelled")


def test_rollouts_list_json(demo: Demo) -> None:
    rows = json.loads(ok("rollouts", "list", "--url", demo.url, "--json"))
    assert [r["rollout_id"] for r in rows] == [
        demo.solved.rollout_id, demo.crashed.rollout_id, demo.retried, demo.queued,
    ]  # fmt: skip
    assert rows[0]["input"] == {"question": "2+2"} and rows[0]["resources"] == {"system_prompt": 2}
    assert rows[1]["error"] == "RuntimeError: calculator exploded"
    assert json.loads(ok("rollouts", "list", "--url", demo.url, "--json", "--status", "cancelled")) == []


def test_rollouts_list_fits_80_columns(demo: Demo) -> None:
    out = ok("rollouts", "list", "--url", demo.url, env={"COLUMNS": "80"})
    assert all(len(line) <= 80 for line in out.splitlines()), out
    for rollout_id in (demo.solved.rollout_id, demo.crashed.rollout_id, demo.retried, demo.queued):
        assert rollout_id in out  # never cut
    # the error column is left out, and the error listed under the table
    assert f"{demo.crashed.rollout_id}: RuntimeError: calculator exploded" in out


def test_rollouts_show(demo: Demo) -> None:
    out = ok("rollouts", "show", demo.solved.rollout_id, "--url", demo.url)
    assert re.search(rf"rollout\s+{demo.solved.rollout_id}", out)
    assert re.search(r"status\s+succeeded", out) and re.search(r"mode\s+train", out)
    assert '"question": "2+2"' in out and '"split": "dev"' in out
    # attempts table
    attempt = line_with(out, demo.solved.attempt_id)
    assert re.search(r"^1\s+at-\S+\s+succeeded\s+pid-\d+", attempt.strip()), attempt
    assert re.search(r"\s8$", attempt.rstrip()), "8 spans in that attempt"
    # resource versions
    assert re.search(r"system_prompt\s+2", out)
    # spans by kind
    assert "Spans (8)" in out
    counts = dict(re.findall(r"^(llm|reward|agent|chain|tool|custom) +(\d+) *$", out, re.MULTILINE))
    assert counts == {"llm": "2", "reward": "2", "agent": "1", "chain": "1", "tool": "1", "custom": "1"}
    # rewards
    assert re.search(r"1\s+-\s+1\.0\s+yes", out)
    assert re.search(r"1\s+format\s+0\.25\s+no", out)


def test_rollouts_show_attempts_and_queued(demo: Demo) -> None:
    out = ok("rollouts", "show", demo.retried, "--url", demo.url)
    assert re.search(r"attempts\s+2 of at most 2", out)
    assert re.search(rf"1\s+{demo.first_attempt}\s+failed\s+worker-a", out)
    assert re.search(rf"2\s+{demo.second_attempt}\s+succeeded\s+worker-b", out)
    assert "model timed out" in out
    assert "no resource versions recorded" in out

    out = ok("rollouts", "show", demo.queued, "--url", demo.url)
    assert re.search(r"status\s+queued", out)
    assert "no attempts yet (queued)" in out and "no spans recorded" in out and "no rewards recorded" in out


def test_rollouts_show_unknown_id(demo: Demo) -> None:
    failed(run("rollouts", "show", "ro-nope", "--url", demo.url), "no rollout 'ro-nope' in the store")


# spans tree ----------------------------------------------------------------------------
def depth(line: str) -> int:
    """Where a tree node's text starts: each level adds 4 characters of guide lines."""
    return re.search(r"[A-Za-z]", line).start()  # type: ignore[union-attr]


def test_spans_tree_nests_and_orders(demo: Demo) -> None:
    out = ok("spans", "tree", demo.solved.rollout_id, "--url", demo.url)
    lines = out.splitlines()
    assert lines[0].startswith(f"rollout {demo.solved.rollout_id}  succeeded  train  8 spans")
    names = {
        "attempt": f"attempt 1  {demo.solved.attempt_id}",
        "solver": "agent solver",
        "chain": "chain calc-chain",
        "tool": "tool execute_tool calculator",
        "early": "llm early-llm",
        "late": "llm late-llm",
        "reward": "reward reward ",
        "format": "reward reward format",
        "orphan": "custom orphan",
    }
    where = {key: next(i for i, line in enumerate(lines) if text in line) for key, text in names.items()}
    # children by start time, then sequence; roots (no parent, or a missing one) at the top
    order = ["attempt", "solver", "chain", "tool", "early", "late", "reward", "format", "orphan"]
    assert sorted(where, key=where.__getitem__) == order, out
    level = {key: depth(lines[i]) for key, i in where.items()}
    assert level["attempt"] == 4
    assert level["solver"] == level["reward"] == level["format"] == level["orphan"] == 8
    assert level["chain"] == level["early"] == level["late"] == 12
    assert level["tool"] == 16
    assert "250.0 ms" in lines[where["late"]] and "500.0 ms" in lines[where["early"]]
    assert "100.0 ms" in lines[where["tool"]]
    assert "value=1.0" in lines[where["reward"]] and "(primary)" in lines[where["reward"]]
    assert "value=0.25" in lines[where["format"]] and "(primary)" not in lines[where["format"]]


def test_spans_tree_groups_by_attempt(demo: Demo) -> None:
    out = ok("spans", "tree", demo.retried, "--url", demo.url)
    a1, first, a2, second = (out.index(t) for t in ("attempt 1", "first-try", "attempt 2", "second-try"))
    assert a1 < first < a2 < second
    assert "model timed out" in line_with(out, "attempt 1")
    assert "worker-b" in line_with(out, "attempt 2")
    assert "value=0.5" in out

    only_second = ok("spans", "tree", demo.retried, "--attempt", "2", "--url", demo.url)
    assert "second-try" in only_second and "first-try" not in only_second and "attempt 1" not in only_second
    only_first = ok("spans", "tree", demo.retried, "-a", demo.first_attempt, "--url", demo.url)
    assert "first-try" in only_first and "second-try" not in only_first

    failed(
        run("spans", "tree", demo.retried, "--attempt", "9", "--url", demo.url),
        f"rollout {demo.retried} has no attempt '9'",
        demo.first_attempt,
    )


def test_spans_tree_of_failed_and_queued_rollouts(demo: Demo) -> None:
    out = ok("spans", "tree", demo.crashed.rollout_id, "--url", demo.url)
    assert "error: ZeroDivisionError" in line_with(out, "tool execute_tool calculator")
    assert "calculator exploded" in line_with(out, "exception RuntimeError")

    out = ok("spans", "tree", demo.queued, "--url", demo.url)
    assert "no attempts yet (queued)" in out


def test_spans_tree_colors_kinds(demo: Demo) -> None:
    out = ok("spans", "tree", demo.solved.rollout_id, "--url", demo.url, env={"FORCE_COLOR": "1"})
    assert "\x1b[1;36mllm\x1b[0m" in out  # bold cyan
    assert "\x1b[1;33mtool\x1b[0m" in out  # bold yellow


def test_spans_tree_unknown_rollout(demo: Demo) -> None:
    failed(run("spans", "tree", "ro-nope", "--url", demo.url), "no rollout 'ro-nope' in the store")


# resources -----------------------------------------------------------------------------
def test_resources_list(demo: Demo) -> None:
    out = ok("resources", "list", "--url", demo.url)
    assert re.search(r"policy\s+1\s+lora_adapter\s+\S+ \S+\s+grpo/3\s+2\.0 KiB", out)
    assert re.search(r"system_prompt\s+2\s+prompt_template\s+\S+ \S+\s+apo/step-1\s+-", out)
    assert out.index("policy") < out.index("system_prompt")


def test_resources_show_latest_and_a_version(demo: Demo) -> None:
    out = ok("resources", "show", "system_prompt", "--url", demo.url)
    assert re.search(r"resource\s+system_prompt  version 2  \(latest\)", out)
    assert '"template": "You are a careful calculator."' in out
    assert re.search(r"^val_reward\s+0\.75\s*$", out, re.MULTILINE)
    assert re.search(r"^\s+1\s+prompt_template.*apo/step-0.*val_reward=0\.5", out, re.MULTILINE)
    assert re.search(r"▶ 2\s+prompt_template.*apo/step-1.*val_reward=0\.75", out)

    out = ok("resources", "show", "system_prompt", "--version", "1", "--url", demo.url)
    assert re.search(r"resource\s+system_prompt  version 1\s*$", out, re.MULTILINE)
    assert '"template": "v1"' in out and "▶ 1" in out

    out = ok("resources", "show", "policy", "--url", demo.url)
    assert "2,048 bytes  sha256 " in out and "no metrics" in out


def test_resources_show_unknown(demo: Demo) -> None:
    failed(run("resources", "show", "nope", "--url", demo.url), "no resource 'nope'")
    failed(
        run("resources", "show", "policy", "-v", "9", "--url", demo.url), "no resource 'policy' (version 9)"
    )


# export --------------------------------------------------------------------------------
def parse_jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_export_jsonl_round_trips(demo: Demo, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "EXPORT_PAGE", 3)  # four rollouts: two pages
    records = parse_jsonl(ok("export", "--url", demo.url))
    ids = [r["rollout_id"] for r in records]
    assert ids == [demo.solved.rollout_id, demo.crashed.rollout_id, demo.retried, demo.queued]

    store = voltline.connect(demo.url, create=False)
    try:
        for record in records:
            attempts, spans = record.pop("attempts"), record.pop("spans")
            assert voltline.Rollout.model_validate(record) == store.get_rollout(record["rollout_id"])
            assert [voltline.Attempt.model_validate(a) for a in attempts] == store.get_attempts(
                record["rollout_id"]
            )
            stored = store.query_spans(rollout_id=record["rollout_id"])
            assert len(spans) == len(stored)
            assert [voltline.Span.model_validate(s) for s in spans] == stored
    finally:
        store.close()
    counts = {
        r["rollout_id"]: (len(r["attempts"]), len(r["spans"]))
        for r in parse_jsonl(ok("export", "--url", demo.url))
    }
    assert counts == {demo.solved.rollout_id: (1, 8), demo.crashed.rollout_id: (1, 2), demo.retried: (2, 3),
                      demo.queued: (0, 0)}  # fmt: skip
    solved = parse_jsonl(ok("export", "--url", demo.url))[0]
    rewards = [s["attributes"]["reward.value"] for s in solved["spans"] if s["kind"] == "reward"]
    assert sorted(rewards) == [0.25, 1.0]


def test_export_to_a_file_with_filters(demo: Demo, tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    result = run(
        "export", "--format", "jsonl", "--output", str(target), "--status", "succeeded", "--url", demo.url
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr.strip() == f"exported 2 rollouts with 11 spans to {target}"
    records = parse_jsonl(target.read_text(encoding="utf-8"))
    assert [r["rollout_id"] for r in records] == [demo.solved.rollout_id, demo.retried]

    records = parse_jsonl(ok("export", "--mode", "val", "-o", "-", "--url", demo.url))
    assert [r["rollout_id"] for r in records] == [demo.crashed.rollout_id]
    assert records[0]["status"] == "failed" and records[0]["attempts"][0]["status"] == "failed"


def test_export_rejects_other_formats(demo: Demo, tmp_path: Path) -> None:
    failed(run("export", "--format", "csv", "--url", demo.url), "unsupported export format 'csv'", "jsonl")
    failed(run("export", "-f", "parquet"), "unsupported export format 'parquet'")
    assert not (tmp_path / "voltline.db").exists()


def test_export_to_an_unwritable_path(demo: Demo, tmp_path: Path) -> None:
    failed(
        run("export", "-o", str(tmp_path / "no" / "such" / "dir.jsonl"), "--url", demo.url), "cannot write"
    )


# errors --------------------------------------------------------------------------------
READ_COMMANDS: list[Sequence[str]] = [
    ("rollouts", "list"),
    ("rollouts", "show", "ro-x"),
    ("spans", "tree", "ro-x"),
    ("resources", "list"),
    ("resources", "show", "x"),
    ("export",),
    ("db", "current"),
]


@pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: " ".join(c))
def test_missing_database_is_an_error_and_is_not_created(command: Sequence[str], tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    failed(run(*command, "--url", f"sqlite:///{missing}"), f"no Voltline database at {missing}", "db upgrade")
    assert not missing.exists()


def test_default_url_is_voltline_db_in_the_working_directory(tmp_path: Path) -> None:
    failed(run("rollouts", "list"), f"no Voltline database at {tmp_path / 'voltline.db'}")
    assert not (tmp_path / "voltline.db").exists()


def test_url_from_environment(demo: Demo) -> None:
    out = ok("rollouts", "list", env={"VOLTLINE_STORE_URL": demo.url})
    assert demo.solved.rollout_id in out


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://user@localhost/db", ["unsupported store URL 'mysql://user@localhost/db'", "sqlite:///"]),
        ("http://127.0.0.1:1", ["store server at http://127.0.0.1:1 unreachable", "voltline store serve"]),
        ("voltline.db", ["unsupported store URL 'voltline.db'"]),
        ("postgresql://voltline@127.0.0.1:1/voltline",
         ["cannot open the store at postgresql://voltline@127.0.0.1:1/voltline", "port 1 failed", "refused"]),
        ("postgresql://u:hunter2@127.0.0.1:notaport/db", ["invalid store URL postgresql://u:***@127.0.0.1"]),
    ],
)  # fmt: skip
def test_bad_urls_read_clearly(url: str, expected: list[str]) -> None:
    line = failed(run("rollouts", "list", "--url", url), *expected)
    assert "hunter2" not in line


def test_commands_give_up_on_a_store_server_sooner_than_runners() -> None:
    # A person waits at the terminal: a couple of seconds, then the one-line error above. A
    # runner's or an emitter's store rides out a server restart, so connect() keeps its patience.
    url = "http://127.0.0.1:1"
    with cli._open_store(url) as store:
        assert store.patience == cli.HTTP_PATIENCE <= 3  # type: ignore[attr-defined]
    runner_store = voltline.connect(url)
    try:
        assert runner_store.patience >= 15  # type: ignore[attr-defined]
    finally:
        runner_store.close()


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("just some text, not SQLite\n" * 100)
    failed(run("rollouts", "list", "--url", f"sqlite:///{tmp_path}/notes.txt"), "not a database")


# db ------------------------------------------------------------------------------------
def test_db_upgrade_creates_then_reports_up_to_date(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/new.db"
    head = _migrate.head_revision()
    assert ok("db", "upgrade", "--url", url).strip() == f"created {url} at revision {head} (head)"
    assert (tmp_path / "new.db").exists()
    assert ok("db", "upgrade", "--url", url).strip() == f"{url} is already at revision {head} (head)"
    assert ok("db", "current", "--url", url).split() == ["current:", head, "head:", head]
    assert "no rollouts match" in ok("rollouts", "list", "--url", url)


def test_db_upgrade_migrates_an_old_schema(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # a database without Voltline's schema
        conn.execute("CREATE TABLE unrelated (x INTEGER)")
    url = f"sqlite:///{path}"
    head = _migrate.head_revision()
    failed(run("rollouts", "list", "--url", url), "has schema none", f"voltline db upgrade --url {url}")
    out = ok("db", "current", "--url", url)
    assert "current: none" in out and f"head:    {head}" in out and "out of date" in out
    assert f"from revision none (no Voltline schema) to {head}" in ok("db", "upgrade", "--url", url)
    assert ok("db", "current", "--url", url).split() == ["current:", head, "head:", head]


def test_db_upgrade_refuses_a_schema_from_a_newer_voltline(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/future.db"
    ok("db", "upgrade", "--url", url)
    with sqlite3.connect(tmp_path / "future.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    failed(run("db", "upgrade", "--url", url), "schema revision 9999", "newer Voltline", "upgrade Voltline")
    out = ok("db", "current", "--url", url)
    assert "current: 9999" in out and "newer Voltline" in out


def test_db_upgrade_into_a_missing_folder(tmp_path: Path) -> None:
    failed(run("db", "upgrade", "--url", f"sqlite:///{tmp_path}/nope/x.db"), "folder", "does not exist")


# plugins and algorithms ----------------------------------------------------------------
@pytest.fixture
def fresh_plugins() -> Iterator[None]:
    _plugins.plugin_manager(refresh=True)
    yield
    _plugins.plugin_manager(refresh=True)


def test_plugins(fresh_plugins: None) -> None:
    result = run("plugins")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # a broken plugin is reported in the table, not logged on top
    out = result.stdout
    assert re.search(r"^testdist\s+voltline-testdist\s+0\.1\.0\s+ok\s*$", out, re.MULTILINE), out
    broken = line_with(out, "testdist-broken")
    assert re.search(r"voltline-testdist\s+0\.1\.0\s+failed\s+ImportError: .*broken on purpose", broken)
    assert re.search(r"^testdist\s+testdist\s+yes\s*$", out, re.MULTILINE)  # the integration, available


def test_plugins_disabled_by_environment(monkeypatch: pytest.MonkeyPatch, fresh_plugins: None) -> None:
    monkeypatch.setenv("VOLTLINE_DISABLE_PLUGINS", "testdist-broken")
    _plugins.plugin_manager(refresh=True)
    out = ok("plugins")
    assert re.search(r"testdist-broken\s+voltline-testdist\s+0\.1\.0\s+disabled\s+listed in", out)


def test_algorithms(fresh_plugins: None) -> None:
    result = run("algorithms")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    out = result.stdout
    assert re.search(
        r"testdist-ep\s+voltline_testdist\.algo:EchoAlgorithm\s+entry point voltline-testdist\s+ok", out
    )
    assert re.search(r"testdist-hook\s+voltline_testdist\.plugin:HookAlgorithm\s+plugin testdist\s+ok", out)
    assert re.search(r"testdist-broken-algo\s+\S+\s+entry point voltline-testdist\s+error\s+ImportError", out)


# the installed command -----------------------------------------------------------------
def test_installed_command_runs(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("VOLTLINE_STORE_URL", "FORCE_COLOR", "COLUMNS")}
    help_run = subprocess.run(
        [sys.executable, "-m", "voltline", "--help"], capture_output=True, text=True, env=env, timeout=120
    )
    assert help_run.returncode == 0, help_run.stderr
    assert "Usage: voltline " in help_run.stdout and "Examples" in help_run.stdout

    script = Path(sys.executable).with_name("voltline")
    assert script.exists(), "the `voltline` console script is not installed next to this Python"
    missing = tmp_path / "missing.db"
    error_run = subprocess.run(
        [str(script), "rollouts", "list", "--url", f"sqlite:///{missing}"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert error_run.returncode == 1
    assert error_run.stdout == ""
    assert error_run.stderr.startswith("error: no Voltline database at")
    assert error_run.stderr.count("\n") == 1 and "Traceback" not in error_run.stderr
    assert not missing.exists()
