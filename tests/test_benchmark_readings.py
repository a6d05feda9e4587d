"""The record behind the capture-overhead target judges what its readings support: the spread
between readings is pooled over every agent's, so two readings that happen to agree cannot
make a PASS alone, and damaged rows are refused with the line to fix."""

from __future__ import annotations

import importlib.util
import statistics
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parents[1] / "benchmarks" / "_readings.py"
_spec = importlib.util.spec_from_file_location("bench_readings", HERE)
assert _spec is not None and _spec.loader is not None
readings = importlib.util.module_from_spec(_spec)
sys.modules["bench_readings"] = readings  # dataclasses look their module up by name
_spec.loader.exec_module(readings)


def row(agent: str, wall: float, when: str = "2026-12-07") -> dict[str, Any]:
    return {
        "recorded": when, "source": "run@abc1234", "agent": agent, "python": "3.11.7",
        "rounds": 1600, "processes": 40, "uninstrumented_ms": "4.10",
        "voltline_wall": f"{wall:.3f}", "voltline_wall_low": f"{wall - 0.01:.3f}",
        "voltline_wall_high": f"{wall + 0.01:.3f}", "voltline_cpu": f"{wall:.3f}",
        "voltline_cpu_low": f"{wall - 0.01:.3f}", "voltline_cpu_high": f"{wall + 0.01:.3f}",
        "openinference_wall": "1.200",
    }  # fmt: skip


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    for r in rows:
        readings.record(path, r)
    return path


OLD = [0.163, 0.147, 0.142, 0.154, 0.124, 0.152, 0.134, 0.137, 0.152, 0.131]


def test_two_agreeing_readings_are_judged_with_the_spread_of_all_readings(tmp_path: Path) -> None:
    path = write(tmp_path / "h.csv", [row("old", w) for w in OLD] + [row("new", 0.133), row("new", 0.131)])
    judged = readings.judge(readings.load(path), "new", 0.15)
    # Pooled: each reading about its own agent's mean, degrees of freedom (10 - 1) + (2 - 1).
    squares = sum((w - statistics.mean(OLD)) ** 2 for w in OLD) + 2 * 0.001**2
    assert judged.freedom == 10
    assert judged.spread == pytest.approx((squares / 10) ** 0.5)
    new = judged.agents[-1]
    assert new.agent == "new" and new.mean == pytest.approx(0.132)
    half = 2.228 * judged.spread / 2**0.5
    assert (new.low, new.high) == (pytest.approx(0.132 - half), pytest.approx(0.132 + half))
    assert new.high > 0.15 and judged.outcome == "UNSETTLED"
    # Judged by their own 0.1-point spread alone, the same two would have read as a PASS.
    alone = readings.judge(
        readings.load(write(tmp_path / "alone.csv", [row("new", 0.133), row("new", 0.131)])), "new", 0.15
    )
    assert alone.outcome == "PASS"


def test_the_verdict_follows_the_interval(tmp_path: Path) -> None:
    spread = [row("old", w) for w in OLD]
    low = readings.judge(
        readings.load(write(tmp_path / "low.csv", [*spread, *(row("new", 0.12) for _ in range(4))])),
        "new",
        0.15,
    )
    high = readings.judge(
        readings.load(write(tmp_path / "high.csv", [*spread, *(row("new", 0.18) for _ in range(4))])),
        "new",
        0.15,
    )
    assert (low.outcome, high.outcome) == ("PASS", "FAIL")


def test_an_agent_without_readings_or_without_any_spread_is_unsettled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "h.csv", [row("old", 0.10)])
    judged = readings.judge(readings.load(path), "new", 0.15)
    assert judged.spread is None and judged.outcome == "UNSETTLED"
    assert [(s.agent, s.readings) for s in judged.agents] == [("old", [0.10]), ("new", [])]
    assert readings.print_history(path, "new", 0.15) is False
    out = capsys.readouterr().out
    assert "0 reading(s) of the 'new' agent: record one per session" in out
    assert "'new' agent: UNSETTLED" in out


def test_a_damaged_row_is_refused_naming_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "h.csv", [row("new", 0.13), row("new", 0.14)])
    text = path.read_text().splitlines()
    text[2] = text[2].replace("0.140", "fast", 1)
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(SystemExit, match=r"line 3: could not convert string to float: 'fast'"):
        readings.load(path)
