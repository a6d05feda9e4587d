"""Scores of the templates tried so far, by template text, accumulated across steps."""

from __future__ import annotations

from dataclasses import dataclass, field

from .evidence import Sample

__all__ = ["Scored"]

KEEP_SAMPLES = 32  # recent rollouts kept per template to show the optimizer


@dataclass
class Scored:
    """One template: every reward its rollouts earned, and its most recent rollouts."""

    template: str
    order: int  # when it was first seen: ties in mean reward go to the older template
    rewards: list[float] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    expanded: bool = False

    @property
    def mean(self) -> float | None:
        return sum(self.rewards) / len(self.rewards) if self.rewards else None

    def add(self, sample: Sample) -> None:
        self.rewards.append(sample.reward)
        self.samples = [*self.samples, sample][-KEEP_SAMPLES:]

    def worst(self, k: int) -> list[Sample]:
        """The `k` lowest-reward recent rollouts, plus the best one for contrast when it did better."""
        ordered = sorted(self.samples, key=lambda s: s.reward)
        picked = ordered[:k]
        if ordered and ordered[-1] not in picked and ordered[-1].reward > picked[-1].reward:
            picked.append(ordered[-1])
        return picked
