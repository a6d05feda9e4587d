"""From trajectories to the flat list of trainable turns, each with its group key."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from voltline._trajectory import Trajectory, Turn

__all__ = ["Sample", "as_trajectory", "collect_samples", "group_key"]


@dataclass
class Sample:
    """One turn to train on: its ids, reward, group and the rollout it came from."""

    turn: Turn
    group: str
    rollout_id: str
    trajectory_reward: float | None

    @property
    def length(self) -> int:
        return len(self.turn.prompt_token_ids) + len(self.turn.response_token_ids)


def as_trajectory(item: Any) -> Trajectory:
    """Accept a Trajectory, or a dict of one (e.g. a line of an exported JSONL dataset)."""
    return item if isinstance(item, Trajectory) else Trajectory.model_validate(item)


def group_key(trajectory: Trajectory) -> str:
    """The Trainer's ``metadata["group"]``; without it, rollouts of an identical task input form a group."""
    group = trajectory.metadata.get("group")
    if group is not None:
        return str(group)
    return "input:" + json.dumps(trajectory.input, sort_keys=True, default=str)


def collect_samples(
    trajectories: Sequence[Any], *, max_length: int | None = None
) -> tuple[list[Sample], int]:
    """Every turn that can be trained on, in trajectory then turn order; and how many were skipped.

    Turns without prompt or response ids cannot be scored; turns longer than ``max_length``
    are skipped rather than truncated, since cutting the prompt would change what the model saw.
    """
    samples: list[Sample] = []
    skipped = 0
    for item in trajectories:
        trajectory = as_trajectory(item)
        key = group_key(trajectory)
        for turn in sorted(trajectory.turns, key=lambda t: t.sequence):
            too_long = max_length is not None and (
                len(turn.prompt_token_ids) + len(turn.response_token_ids) > max_length
            )
            if not turn.prompt_token_ids or not turn.response_token_ids or too_long:
                skipped += 1
                continue
            samples.append(Sample(turn, key, trajectory.rollout_id, trajectory.reward))
    return samples, skipped
