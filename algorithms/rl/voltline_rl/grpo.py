"""GRPO: group-relative policy optimisation of a LoRA adapter on exact token ids.

Per step: each turn's advantage is its reward normalised within its group (the rollouts of
one task), the clipped surrogate is taken on response tokens only, a k3 KL term keeps the
policy near the reference (the same model with the adapter disabled), the loss is averaged
per token over the whole batch ("dapo"), and the new adapter is returned as a
``lora_adapter`` version the proxy hot-swaps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from voltline.algorithms import StepResult

from .batching import Batch, make_batch, token_logprobs
from .losses import clipped_surrogate, group_advantages, k3_kl, masked_token_mean
from .policy import LoraAlgorithm
from .samples import Sample, collect_samples

__all__ = ["GRPO"]


class GRPO(LoraAlgorithm):
    """GRPO with LoRA. Owns one ``lora_adapter`` resource (default ``"policy"``).

    ``model`` is a local Hugging Face model folder (``voltline model init`` makes a tiny one).
    Defaults are the recipe measured on CPU in the project's notes: LoRA r=16, alpha=32 on
    all linear layers, epsilon=0.2, beta=0.04, AdamW lr 5e-4, gradient clip 1.0, one update
    per batch.
    """

    name = "grpo"
    resources = ("policy",)

    def __init__(
        self,
        model: str | Path,
        *,
        resources: Sequence[str] | None = None,
        lr: float = 5e-4,
        beta: float = 0.04,
        epsilon: float = 0.2,
        advantage_eps: float = 1e-4,
        lora_r: int = 16,
        lora_alpha: int = 32,
        lora_dropout: float = 0.0,
        target_modules: str | Sequence[str] = "all-linear",
        max_grad_norm: float = 1.0,
        updates_per_step: int = 1,
        micro_batch_size: int = 32,
        max_length: int | None = None,
        use_sampler_logprobs: bool = False,
        init_adapter: str | Path | bytes | None = None,
        device: str | None = None,
        seed: int = 0,
        **config: Any,
    ) -> None:
        super().__init__(resources=resources, **config)
        if updates_per_step < 1 or micro_batch_size < 1:
            raise ValueError("updates_per_step and micro_batch_size must be >= 1")
        self.beta, self.epsilon, self.advantage_eps = beta, epsilon, advantage_eps
        self.updates_per_step, self.micro_batch_size = updates_per_step, micro_batch_size
        self.max_length, self.use_sampler_logprobs = max_length, use_sampler_logprobs
        self._init_policy(
            model, lr=lr, lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
            target_modules=target_modules, max_grad_norm=max_grad_norm, init_adapter=init_adapter,
            device=device, seed=seed,
        )  # fmt: skip

    def step(self, trajectories: Sequence[Any]) -> StepResult:
        started = time.perf_counter()
        samples, skipped = collect_samples(trajectories, max_length=self.max_length)
        if not samples:
            return StepResult(metrics={"turns": 0.0, "skipped_turns": float(skipped)})
        rewards = [s.turn.reward for s in samples]
        groups = [s.group for s in samples]
        advantages = group_advantages(rewards, groups, eps=self.advantage_eps)
        metrics = self._update(samples, advantages)
        self.steps += 1
        metrics.update(_reward_metrics(rewards, groups))
        metrics.update(turns=float(len(samples)), skipped_turns=float(skipped), step=float(self.steps))
        metrics["seconds"] = time.perf_counter() - started
        resource = self.policy.new_resource(self.owned_resources[0], {"step": float(self.steps)})
        return StepResult(resources=[resource], metrics=metrics)

    def _update(self, samples: list[Sample], advantages: list[float]) -> dict[str, float]:
        model, device = self.policy.model, self.policy.device
        chunks = [
            (samples[i : i + self.micro_batch_size], advantages[i : i + self.micro_batch_size])
            for i in range(0, len(samples), self.micro_batch_size)
        ]
        batches = [
            (
                make_batch(
                    [s.turn.prompt_token_ids for s in chunk],
                    [s.turn.response_token_ids for s in chunk],
                    [s.turn.response_logprobs for s in chunk],
                    pad_id=self.policy.pad_id,
                ),
                torch.tensor(adv, dtype=torch.float32, device=device),
            )
            for chunk, adv in chunks
        ]
        total = sum(b.tokens for b, _ in batches)
        # Fixed for the whole step: the reference never trains, and "old" is the policy that
        # sampled (only needed separately when several updates reuse the batch).
        refs = [self._reference(b) for b, _ in batches] if self.beta else [None] * len(batches)
        olds: list[torch.Tensor | None] = [None] * len(batches)
        if self.updates_per_step > 1 and not self.use_sampler_logprobs:
            with torch.no_grad():
                olds = [token_logprobs(model, b, device) for b, _ in batches]
        sums = {"loss": 0.0, "policy_loss": 0.0, "kl": 0.0, "clip_fraction": 0.0}
        diff_max, norm = float("nan"), 0.0
        for update in range(self.updates_per_step):
            for (batch, adv), ref, old in zip(batches, refs, olds, strict=True):
                mask = batch.loss_mask.to(device)
                logp = token_logprobs(model, batch, device)
                if update == 0 and batch.sampler_logprobs is not None:
                    diff_max = _max_diff(diff_max, logp.detach(), batch.sampler_logprobs.to(device), mask)
                if old is None:
                    old = logp.detach()
                    if self.use_sampler_logprobs and batch.sampler_logprobs is not None:
                        given = batch.sampler_logprobs.to(device)
                        old = torch.where(torch.isnan(given), old, given)
                surrogate, clipped = clipped_surrogate(logp, old, adv, self.epsilon)
                per_token = surrogate
                kl = None
                if ref is not None:
                    kl = k3_kl(logp, ref)
                    per_token = surrogate + self.beta * kl
                loss = masked_token_mean(per_token, mask, total)
                loss.backward()
                if update == self.updates_per_step - 1:  # report the last pass
                    sums["loss"] += float(loss.detach())
                    sums["policy_loss"] += float(masked_token_mean(surrogate.detach(), mask, total))
                    sums["clip_fraction"] += float(masked_token_mean(clipped, mask, total))
                    if kl is not None:
                        sums["kl"] += float(masked_token_mean(kl.detach(), mask, total))
            norm = self.policy.clip_and_step()
        metrics = dict(sums, grad_norm=norm, tokens=float(total))
        if not math.isnan(diff_max):
            metrics["logprob_diff_max"] = diff_max
        return metrics

    def _reference(self, batch: Batch) -> torch.Tensor:
        model = self.policy.model
        with torch.no_grad(), model.disable_adapter():
            return token_logprobs(model, batch, self.policy.device)


def _max_diff(current: float, logp: torch.Tensor, given: torch.Tensor, mask: torch.Tensor) -> float:
    # How far the recomputed logprobs are from the sampler's: near 0 when the runner sampled
    # with the adapter version being trained; large means stale samples or a mismatch.
    known = (mask > 0) & ~torch.isnan(given)
    if not bool(known.any()):
        return current
    diff = float((logp - given).abs()[known].max())
    return diff if math.isnan(current) else max(current, diff)


def _reward_metrics(rewards: list[float], groups: list[str]) -> dict[str, float]:
    by_group: dict[str, list[float]] = {}
    for reward, group in zip(rewards, groups, strict=True):
        by_group.setdefault(group, []).append(reward)
    mean = sum(rewards) / len(rewards)
    flat = sum(1 for values in by_group.values() if max(values) == min(values))
    return {
        "reward_mean": mean,
        "reward_std": math.sqrt(sum((r - mean) ** 2 for r in rewards) / len(rewards)),
        "groups": float(len(by_group)),
        "zero_std_groups": flat / len(by_group),  # groups with nothing to learn from
    }
