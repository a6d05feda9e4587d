"""PPO with a value head and GAE, training a LoRA adapter on exact token ids.

Each response token is an action. Its reward is a KL penalty to the reference (the model with
the adapter disabled), plus the turn's reward on the turn's last token; a linear value head on
the policy's last hidden state gives the baseline; GAE turns both into per-token advantages,
whitened over the batch. The update is the clipped surrogate plus a clipped value loss, for
``updates_per_step`` passes over the batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from voltline.algorithms import StepResult

from .batching import Batch, logprobs_and_states, make_batch, token_logprobs
from .losses import clipped_surrogate, clipped_value_loss, gae, masked_token_mean, masked_whiten
from .policy import LoraAlgorithm
from .samples import Sample, collect_samples

__all__ = ["PPO", "VALUE_HEAD_FILE"]

VALUE_HEAD_FILE = "value_head.safetensors"  # kept in the artifact; peft and the proxy ignore it


class PPO(LoraAlgorithm):
    """PPO with LoRA and a value head. Owns one ``lora_adapter`` resource (default ``"policy"``)."""

    name = "ppo"
    resources = ("policy",)

    def __init__(
        self,
        model: str | Path,
        *,
        resources: Sequence[str] | None = None,
        lr: float = 5e-4,
        epsilon: float = 0.2,
        value_epsilon: float = 0.2,
        gamma: float = 1.0,
        lam: float = 0.95,
        vf_coef: float = 0.1,
        kl_coef: float = 0.04,
        updates_per_step: int = 2,
        whiten_advantages: bool = True,
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
        if updates_per_step < 1 or micro_batch_size < 1:
            raise ValueError("updates_per_step and micro_batch_size must be >= 1")
        self.epsilon, self.value_epsilon, self.gamma, self.lam = epsilon, value_epsilon, gamma, lam
        self.vf_coef, self.kl_coef, self.whiten = vf_coef, kl_coef, whiten_advantages
        self.updates_per_step, self.micro_batch_size, self.max_length = (
            updates_per_step,
            micro_batch_size,
            max_length,
        )
        self._init_policy(
            model, lr=lr, lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
            target_modules=target_modules, max_grad_norm=max_grad_norm, init_adapter=init_adapter,
            device=device, seed=seed,
        )  # fmt: skip
        self._value_head: torch.nn.Linear | None = None

    @property
    def value_head(self) -> torch.nn.Linear:
        """Linear hidden -> value, created (zero: no opinion yet) or restored with the model."""
        if self._value_head is None:
            model = self.policy.model
            head = torch.nn.Linear(model.config.hidden_size, 1).to(self.policy.device)
            torch.nn.init.zeros_(head.weight)
            torch.nn.init.zeros_(head.bias)
            saved = self.policy.loaded_from / VALUE_HEAD_FILE if self.policy.loaded_from else None
            if saved is not None and saved.exists():
                from safetensors.torch import load_file

                head.load_state_dict(load_file(str(saved)))
            # Must be registered before the optimizer is first built.
            self.policy.extra_parameters = list(head.parameters())
            self._value_head = head
        return self._value_head

    def step(self, trajectories: Sequence[Any]) -> StepResult:
        started = time.perf_counter()
        samples, skipped = collect_samples(trajectories, max_length=self.max_length)
        if not samples:
            return StepResult(metrics={"turns": 0.0, "skipped_turns": float(skipped)})
        head = self.value_head
        batches = [
            self._batch(samples[i : i + self.micro_batch_size])
            for i in range(0, len(samples), self.micro_batch_size)
        ]
        rollout = [self._score(batch, chunk) for batch, chunk in batches]
        advantages = [r["advantages"] for r in rollout]
        masks = [b.loss_mask.to(self.policy.device) for b, _ in batches]
        if self.whiten:
            advantages = _whiten_all(advantages, masks)
        total = sum(b.tokens for b, _ in batches)
        sums = {"loss": 0.0, "policy_loss": 0.0, "value_loss": 0.0, "clip_fraction": 0.0}
        norm = 0.0
        for update in range(self.updates_per_step):
            for (batch, _), r, adv, mask in zip(batches, rollout, advantages, masks, strict=True):
                logp, states = logprobs_and_states(self.policy.model, batch, self.policy.device)
                values = head(states).squeeze(-1)
                surrogate, clipped = clipped_surrogate(logp, r["old_logp"], adv, self.epsilon)
                value_loss = clipped_value_loss(values, r["old_values"], r["returns"], self.value_epsilon)
                loss = masked_token_mean(surrogate + self.vf_coef * value_loss, mask, total)
                loss.backward()
                if update == self.updates_per_step - 1:
                    sums["loss"] += float(loss.detach())
                    sums["policy_loss"] += float(masked_token_mean(surrogate.detach(), mask, total))
                    sums["value_loss"] += float(masked_token_mean(value_loss.detach(), mask, total))
                    sums["clip_fraction"] += float(masked_token_mean(clipped, mask, total))
            norm = self.policy.clip_and_step()
        self.steps += 1
        rewards = [s.turn.reward for s in samples]
        metrics = dict(sums, grad_norm=norm, tokens=float(total))
        metrics.update(
            kl=sum(float((r["kl"] * m).sum()) for r, m in zip(rollout, masks, strict=True)) / max(total, 1),
            value_mean=sum(float((r["old_values"] * m).sum()) for r, m in zip(rollout, masks, strict=True))
            / max(total, 1),
            reward_mean=sum(rewards) / len(rewards),
            turns=float(len(samples)),
            skipped_turns=float(skipped),
            step=float(self.steps),
            seconds=time.perf_counter() - started,
        )
        resource = self.policy.new_resource(
            self.owned_resources[0], {"step": float(self.steps)}, self._save_head
        )
        return StepResult(resources=[resource], metrics=metrics)

    def _batch(self, chunk: list[Sample]) -> tuple[Batch, list[Sample]]:
        batch = make_batch(
            [s.turn.prompt_token_ids for s in chunk],
            [s.turn.response_token_ids for s in chunk],
            pad_id=self.policy.pad_id,
        )
        return batch, chunk

    def _score(self, batch: Batch, chunk: list[Sample]) -> dict[str, torch.Tensor]:
        """The fixed part of a step: old logprobs and values, rewards, advantages and returns."""
        device = self.policy.device
        model = self.policy.model
        mask = batch.loss_mask.to(device)
        with torch.no_grad():
            old_logp, states = logprobs_and_states(model, batch, device)
            old_values = self.value_head(states).squeeze(-1) * mask
            if self.kl_coef:
                with model.disable_adapter():
                    ref = token_logprobs(model, batch, device)
                kl = (old_logp - ref) * mask  # k1 per token: its sum is the sequence's KL estimate
            else:
                kl = torch.zeros_like(old_logp)
            rewards = -self.kl_coef * kl
            for b, sample in enumerate(chunk):
                last = len(sample.turn.prompt_token_ids) + len(sample.turn.response_token_ids) - 2
                rewards[b, last] += sample.turn.reward  # the turn's reward arrives with its last token
            advantages, returns = gae(rewards, old_values, mask, self.gamma, self.lam)
        return {
            "old_logp": old_logp,
            "old_values": old_values,
            "kl": kl,
            "advantages": advantages,
            "returns": returns,
        }

    def _save_head(self, folder: Path) -> None:
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous() for k, v in self.value_head.state_dict().items()}
        save_file(state, str(folder / VALUE_HEAD_FILE))


def _whiten_all(advantages: list[torch.Tensor], masks: list[torch.Tensor]) -> list[torch.Tensor]:
    # Whitened over the whole batch, not per micro-batch: same statistics whatever the split.
    flat = masked_whiten(
        torch.cat([a.flatten() for a in advantages]), torch.cat([m.flatten() for m in masks])
    )
    out, offset = [], 0
    for a in advantages:
        out.append(flat[offset : offset + a.numel()].view_as(a))
        offset += a.numel()
    return out
