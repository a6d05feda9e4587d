"""SFT: fine-tune a LoRA adapter on the best trajectories (rejection sampling) or a dataset.

The loss is the negative log-likelihood of the response tokens only, averaged per token;
prompt, tool-result and observation tokens are context, never targets.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from voltline._trajectory import Trajectory
from voltline.algorithms import StepResult

from .batching import Batch, make_batch, token_logprobs
from .losses import masked_token_mean
from .policy import LoraAlgorithm
from .samples import Sample, as_trajectory, collect_samples, group_key

__all__ = ["SFT", "load_trajectories", "select_best"]


def _score(trajectory: Trajectory) -> float:
    if trajectory.reward is not None:
        return trajectory.reward
    return sum(t.reward for t in trajectory.turns)


def select_best(
    trajectories: Sequence[Any], *, per_group: int = 1, min_reward: float | None = None
) -> list[Trajectory]:
    """Rejection sampling: the ``per_group`` highest-reward trajectories of each group.

    A trajectory's reward is its primary reward, or the sum of its turns' rewards. With
    ``min_reward``, trajectories below it are dropped even if they are their group's best
    (the best of several failures is still a failure). Ties keep the earlier trajectory.
    """
    groups: dict[str, list[Trajectory]] = {}
    for item in trajectories:
        trajectory = as_trajectory(item)
        groups.setdefault(group_key(trajectory), []).append(trajectory)
    chosen: list[Trajectory] = []
    for members in groups.values():
        ranked = sorted(members, key=_score, reverse=True)  # stable: ties keep input order
        chosen.extend(t for t in ranked[:per_group] if min_reward is None or _score(t) >= min_reward)
    return chosen


def load_trajectories(path: str | Path) -> list[Trajectory]:
    """Trajectories from a JSONL file, one ``Trajectory`` JSON object per line (an exported dataset)."""
    lines = Path(path).read_text().splitlines()
    return [Trajectory.model_validate(json.loads(line)) for line in lines if line.strip()]


class SFT(LoraAlgorithm):
    """Supervised fine-tuning of a LoRA adapter. Owns one ``lora_adapter`` resource.

    ``select="best"`` keeps the best ``per_group`` trajectories of each group (at least
    ``min_reward`` if given); ``select="all"`` trains on everything it is given (a curated dataset).
    """

    name = "sft"
    resources = ("policy",)

    def __init__(
        self,
        model: str | Path,
        *,
        resources: Sequence[str] | None = None,
        select: Literal["best", "all"] = "best",
        per_group: int = 1,
        min_reward: float | None = None,
        epochs: int = 1,
        lr: float = 5e-4,
        lora_r: int = 16,
        lora_alpha: int = 32,
        lora_dropout: float = 0.0,
        target_modules: str | Sequence[str] = "all-linear",
        max_grad_norm: float = 1.0,
        micro_batch_size: int = 32,
        max_length: int | None = None,
        init_adapter: str | Path | bytes | None = None,
        device: str | None = None,
        seed: int = 0,
        **config: Any,
    ) -> None:
        super().__init__(resources=resources, **config)
        if select not in ("best", "all"):
            raise ValueError(f"select must be 'best' or 'all', not {select!r}")
        if epochs < 1 or micro_batch_size < 1 or per_group < 1:
            raise ValueError("epochs, micro_batch_size and per_group must be >= 1")
        self.select, self.per_group, self.min_reward = select, per_group, min_reward
        self.epochs, self.micro_batch_size, self.max_length = epochs, micro_batch_size, max_length
        self._init_policy(
            model, lr=lr, lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
            target_modules=target_modules, max_grad_norm=max_grad_norm, init_adapter=init_adapter,
            device=device, seed=seed,
        )  # fmt: skip

    def chosen(self, trajectories: Sequence[Any]) -> list[Trajectory]:
        """The trajectories a step would train on."""
        if self.select == "all":
            return [as_trajectory(t) for t in trajectories]
        return select_best(trajectories, per_group=self.per_group, min_reward=self.min_reward)

    def step(self, trajectories: Sequence[Any]) -> StepResult:
        started = time.perf_counter()
        chosen = self.chosen(trajectories)
        samples, skipped = collect_samples(chosen, max_length=self.max_length)
        if not samples:
            return StepResult(metrics={"selected": float(len(chosen)), "turns": 0.0})
        epoch_losses = []
        for _ in range(self.epochs):
            total, tokens = 0.0, 0
            for batch in self._batches(samples):
                mask = batch.loss_mask.to(self.policy.device)
                logp = token_logprobs(self.policy.model, batch, self.policy.device)
                loss = masked_token_mean(-logp, mask)
                loss.backward()
                self.policy.clip_and_step()
                total += float(loss.detach()) * batch.tokens
                tokens += batch.tokens
            epoch_losses.append(total / max(tokens, 1))
        self.steps += 1
        metrics = {
            "loss": epoch_losses[-1],
            "loss_first_epoch": epoch_losses[0],
            "selected": float(len(chosen)),
            "turns": float(len(samples)),
            "skipped_turns": float(skipped),
            "tokens": float(sum(len(s.turn.response_token_ids) for s in samples)),
            "step": float(self.steps),
            "seconds": time.perf_counter() - started,
        }
        resource = self.policy.new_resource(self.owned_resources[0], {"step": float(self.steps)})
        return StepResult(resources=[resource], metrics=metrics)

    def nll(self, trajectories: Sequence[Any]) -> float:
        """Mean per-token negative log-likelihood of the response tokens under the current adapter."""
        samples, _ = collect_samples([as_trajectory(t) for t in trajectories], max_length=self.max_length)
        total, tokens = 0.0, 0
        with torch.no_grad():
            for batch in self._batches(samples):
                logp = token_logprobs(self.policy.model, batch, self.policy.device)
                total += float(-(logp * batch.loss_mask.to(logp.device)).sum())
                tokens += batch.tokens
        return total / max(tokens, 1)

    def _batches(self, samples: list[Sample]) -> Iterator[Batch]:
        for i in range(0, len(samples), self.micro_batch_size):
            chunk = samples[i : i + self.micro_batch_size]
            yield make_batch(
                [s.turn.prompt_token_ids for s in chunk],
                [s.turn.response_token_ids for s in chunk],
                pad_id=self.policy.pad_id,
            )
