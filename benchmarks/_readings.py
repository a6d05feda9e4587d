"""The record of a benchmark's full readings, one per session, and the judgement over them.

A single run judges one box on one day; the reading moves between fresh VMs by more than a run's
own interval. So full runs append a row to a CSV file beside the benchmark, and the readings of
the agent measured now are judged together: their mean, with a 95% t-interval, by the same
PASS / FAIL / UNSETTLED rule as one run. Rows of an earlier agent stay as data: they are listed
with their own mean but not judged, and they count towards the spread between readings, which
is the boxes' and the days' doing rather than the agent's. So the interval's spread is pooled
over every agent's readings, each about its own agent's mean: two readings of one agent can agree
by luck and would alone give an interval far too narrow.
"""

from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# What was run, then its figures (ratios as fractions added, e.g. 0.131).
FIGURES = (
    "uninstrumented_ms", "voltline_wall", "voltline_wall_low", "voltline_wall_high",
    "voltline_cpu", "voltline_cpu_low", "voltline_cpu_high", "openinference_wall",
)  # fmt: skip
FIELDS = ("recorded", "source", "agent", "python", "rounds", "processes", *FIGURES)
# Two-sided 95% quantiles of Student's t for 1 to 30 degrees of freedom (beyond, the 30's: wider
# than the true one, so never a PASS the data do not support).
T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
    2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
    2.045, 2.042,
)  # fmt: skip


def verdict(low: float, high: float, limit: float) -> str:
    """PASS when the whole interval is within `limit`, FAIL when none of it is, else UNSETTLED."""
    if high <= limit:
        return "PASS"
    return "FAIL" if low > limit else "UNSETTLED"


def record(path: Path, row: dict[str, Any]) -> None:
    """Append one run's reading (the header first, for a new file)."""
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, lineterminator="\n")
        if new:
            writer.writeheader()
        writer.writerow(row)


def load(path: Path) -> list[dict[str, Any]]:
    """The recorded rows, figures as floats; SystemExit naming the line of a damaged row."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for line, row in enumerate(rows, start=2):
        missing = [k for k in FIELDS if not row.get(k)]
        if missing:
            raise SystemExit(f"{path}: line {line} has no {', '.join(missing)}; fix or remove that row")
        try:
            for key in FIGURES:
                row[key] = float(row[key])
        except ValueError as exc:
            raise SystemExit(f"{path}: line {line}: {exc}; fix or remove that row") from None
    return rows


@dataclass(frozen=True)
class AgentSummary:
    """One agent's readings of Voltline's added wall time, with an interval when one can be had."""

    agent: str
    readings: list[float]
    mean: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True)
class Judgement:
    spread: float | None  # pooled standard deviation between readings; None without any repeat
    freedom: int  # its degrees of freedom
    agents: list[AgentSummary]  # in the order first recorded; the judged agent last if never recorded
    outcome: str  # the judged agent's verdict


def judge(rows: list[dict[str, Any]], agent: str, limit: float) -> Judgement:
    """Judge `agent`'s mean added wall time against `limit`, the spread pooled over all agents."""
    walls: dict[str, list[float]] = {}
    for r in rows:
        walls.setdefault(r["agent"], []).append(r["voltline_wall"])
    walls.setdefault(agent, [])
    means = {name: statistics.mean(w) if w else None for name, w in walls.items()}
    freedom = sum(max(len(w) - 1, 0) for w in walls.values())
    spread = None
    if freedom:
        squares = sum((x - means[name]) ** 2 for name, w in walls.items() for x in w)
        spread = (squares / freedom) ** 0.5
    summaries, outcome = [], "UNSETTLED"
    for name, ours in walls.items():
        mean, low, high = means[name], None, None
        if mean is not None and spread is not None:
            half = T975[min(freedom, len(T975)) - 1] * spread / len(ours) ** 0.5
            low, high = mean - half, mean + half
            if name == agent:
                outcome = verdict(low, high, limit)
        summaries.append(AgentSummary(name, ours, mean, low, high))
    return Judgement(spread, freedom, summaries, outcome)


def print_history(path: Path, agent: str, limit: float) -> bool:
    """Print the recorded readings and the judgement of `agent`'s; True when it is a PASS."""
    if not path.exists():
        print(f"no readings recorded yet in {path.name}: run with --record first")
        return False
    rows = load(path)
    print(f"Recorded readings ({path.name}):")
    print()
    print(
        "| recorded | source | agent | python | rounds / processes | uninstrumented ms "
        "| Voltline adds (wall, 95% interval) | Voltline adds (CPU) | OpenInference adds (wall) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['recorded']} | {r['source']} | {r['agent']} | {r['python']} "
            f"| {r['rounds']} / {r['processes']} "
            f"| {r['uninstrumented_ms']:.2f} | {r['voltline_wall']:+.1%} "
            f"({r['voltline_wall_low']:+.1%}..{r['voltline_wall_high']:+.1%}) "
            f"| {r['voltline_cpu']:+.1%} | {r['openinference_wall']:+.1%} |"
        )
    print()
    judged = judge(rows, agent, limit)
    if judged.spread is not None:
        print(
            f"Readings stray from their agent's mean by a standard deviation of {judged.spread:.1%} "
            f"(pooled over {len(rows)} readings of {len(judged.agents)} agent(s), {judged.freedom} "
            "degrees of freedom)."
        )
    for s in judged.agents:
        what = f"the {s.agent!r} agent" + ("" if s.agent == agent else " (measured before; not judged)")
        if s.low is None or s.high is None or s.mean is None:
            advice = ": record one per session to judge them together" if s.agent == agent else ""
            print(f"{len(s.readings)} reading(s) of {what}{advice}")
            continue
        above = sum(w > limit for w in s.readings)
        print(
            f"Over {len(s.readings)} reading(s) of {what}, Voltline adds {s.mean:+.1%} (wall) on average, "
            f"95% t-interval {s.low:+.2%}..{s.high:+.2%} (pooled spread); {above} of {len(s.readings)} "
            f"read above {limit:.0%}."
        )
    print(f"Voltline adds <= {limit:.0%} (wall), over readings of the {agent!r} agent: {judged.outcome}")
    return judged.outcome == "PASS"
