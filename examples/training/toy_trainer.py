"""The Trainer end to end in seconds, offline, with no model: reward rises step by step.

A triage agent escalates a support ticket when its urgency score is above a threshold. The
threshold is a `json` resource in the store; a small algorithm learns it from rewards alone
(it never sees the rule that pays): each step it moves the threshold toward the tickets it got
wrong. Two runner processes run the rollouts; the Trainer waits, builds trajectories, calls
the algorithm and publishes the new threshold, which the runners use on the next step.

    python examples/training/toy_trainer.py [--steps 5] [--runners 2] [--store sqlite:///toy.db]
"""

from __future__ import annotations

import argparse
import random
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import voltline
from voltline.algorithms import Algorithm, NewResource, StepResult
from voltline.trainer import Trainer

TRUE_CUTOFF = 0.7  # the policy that pays; only the reward knows it


def triage_agent(ticket: dict[str, Any], resources: dict[str, voltline.ResourceVersion]) -> bool:
    """The agent: top-level, so runner processes can import it. Emits one turn and a reward."""
    threshold = resources["triage"].payload["threshold"]
    escalate = ticket["urgency"] > threshold
    # A one-token "model call" standing in for an LLM: prompt = the ticket, response = the decision.
    voltline.emit_llm(
        model="toy-triage", prompt_token_ids=[7, round(ticket["urgency"] * 100)],
        response_token_ids=[1 if escalate else 0],
    )  # fmt: skip
    voltline.emit_reward(1.0 if escalate == (ticket["urgency"] > TRUE_CUTOFF) else 0.0)
    return escalate


class ThresholdFromRewards(Algorithm):
    """Moves the threshold toward the tickets that earned nothing (they lie between it and the cutoff)."""

    name = "threshold-from-rewards"

    def __init__(self, start: float, lr: float = 0.7, **kw: Any) -> None:
        super().__init__(**kw)
        self.threshold, self.lr = start, lr

    def step(self, trajectories: Sequence[Any]) -> StepResult:
        wrong = [t.input["urgency"] for t in trajectories if t.reward == 0.0]
        if wrong:
            self.threshold += self.lr * (sum(wrong) / len(wrong) - self.threshold)
        return StepResult(
            resources=[NewResource(name="triage", kind="json", payload={"threshold": self.threshold})],
            metrics={"threshold": self.threshold, "wrong": float(len(wrong))},
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--runners", type=int, default=2, help="runner processes (0: one thread)")
    parser.add_argument("--store", help="store URL (default: a temporary SQLite file)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    tickets = [{"urgency": round(rng.random(), 3)} for _ in range(12)]
    held_out = [{"urgency": round(rng.random(), 3)} for _ in range(40)]
    tmp = tempfile.TemporaryDirectory()
    store = args.store or f"sqlite:///{Path(tmp.name) / 'toy.db'}"
    start = 0.2
    algorithm = ThresholdFromRewards(start, resources=("triage",))
    with Trainer(
        store, triage_agent, {"triage": algorithm}, runners=args.runners, group_size=2,
        initial_resources={"triage": {"kind": "json", "payload": {"threshold": start}}},
    ) as trainer:  # fmt: skip
        records = trainer.fit(
            tickets, steps=args.steps, val_tasks=held_out, log_path=Path(tmp.name) / "log.jsonl"
        )

    table = Table(title="reward per step (train: 12 tickets x 2; held-out: 40 other tickets)")
    for column in ("step", "train reward", "held-out reward", "new threshold", "rollouts", "seconds"):
        table.add_column(column, justify="right")
    val = {r["step"]: r["mean_reward"] for r in records if r["event"] == "val"}
    table.add_row("0", "-", f"{val[0]:.3f}", f"{start:.3f}", "-", "-")
    for r in (r for r in records if r["event"] == "train"):
        table.add_row(str(r["step"]), f"{r['mean_reward']:.3f}", f"{val.get(r['step'], float('nan')):.3f}",
                      f"{r['triage/threshold']:.3f}", str(r["rollouts"]), f"{r['seconds']:.2f}")  # fmt: skip
    Console().print(table)
    tmp.cleanup()


if __name__ == "__main__":
    main()
