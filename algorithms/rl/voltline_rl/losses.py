"""GRPO math as small pure functions, so each piece can be checked on hand-computed cases.

Shapes: per-token tensors are ``(batch, length)``; ``mask`` is 1 on tokens the loss is taken
over (the model's own response tokens) and 0 on prompt, tool-result and padding tokens.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import torch

__all__ = [
    "clipped_surrogate",
    "clipped_value_loss",
    "gae",
    "group_advantages",
    "k3_kl",
    "masked_token_mean",
    "masked_whiten",
]


def group_advantages(rewards: Sequence[float], groups: Sequence[Hashable], eps: float = 1e-4) -> list[float]:
    """``(r - mean) / (std + eps)`` with mean and std over the samples sharing a group.

    The population std is used (divide by n), so a group of one gets advantage 0 instead of
    NaN, and a group whose rewards are all equal gets 0: it carries no preference to learn.
    """
    if len(rewards) != len(groups):
        raise ValueError(f"{len(rewards)} rewards but {len(groups)} group keys")
    members: dict[Hashable, list[float]] = {}
    for reward, group in zip(rewards, groups, strict=True):
        members.setdefault(group, []).append(float(reward))
    stats = {}
    for group, values in members.items():
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        stats[group] = (mean, std)
    return [(float(r) - stats[g][0]) / (stats[g][1] + eps) for r, g in zip(rewards, groups, strict=True)]


def clipped_surrogate(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, epsilon: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate per token, as a loss: ``-min(r * A, clip(r, 1 - eps, 1 + eps) * A)``.

    ``r = exp(logp - old_logp)`` is the probability ratio to the policy that sampled.

    ``advantages`` is ``(batch,)`` (one per sequence) or per token. Returns the per-token loss
    and a per-token 0/1 tensor marking where clipping was active (for the clip fraction).
    """
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - epsilon, 1.0 + epsilon) * advantages
    loss = -torch.minimum(unclipped, clipped)
    return loss, (clipped < unclipped).to(logp.dtype)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(policy ‖ reference): ``e^(ref-logp) - (ref-logp) - 1``.

    Always >= 0 and unbiased under samples from the policy; it is 0 where the two agree.
    """
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1.0


def masked_token_mean(
    values: torch.Tensor, mask: torch.Tensor, total_tokens: float | None = None
) -> torch.Tensor:
    """Token-level ("dapo") aggregation: the sum over unmasked tokens / the number of them.

    Every response token weighs the same whatever the length of its sequence (a sequence
    mean would let short answers dominate). ``total_tokens`` is the count over the *whole*
    batch when ``values`` is one micro-batch of it, so accumulated gradients equal one pass.
    """
    mask = mask.to(values.dtype)
    denom = float(mask.sum().item()) if total_tokens is None else float(total_tokens)
    return (values * mask).sum() / max(denom, 1.0)


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the masked (response) positions of each row.

    ``rewards`` and ``values`` are per position, ``(batch, length)``. Each row's masked
    positions must be one contiguous run (one turn's response); the value after its last
    token is 0 (the turn ends there). Returns advantages and returns (advantages + values),
    both 0 outside the mask.
    """
    mask = mask.to(values.dtype)
    advantages = torch.zeros_like(values)
    running = torch.zeros(values.shape[0], dtype=values.dtype, device=values.device)
    next_value = torch.zeros_like(running)
    for t in range(values.shape[1] - 1, -1, -1):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * m
        advantages[:, t] = running
        # Outside the response the chain restarts: nothing after the last token, nothing before.
        next_value = values[:, t] * m
    return advantages, (advantages + values) * mask


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Shift and scale the masked entries to mean 0, std 1 (population); others become 0."""
    mask = mask.to(values.dtype)
    n = mask.sum().clamp(min=1.0)
    mean = (values * mask).sum() / n
    var = (((values - mean) * mask) ** 2).sum() / n
    return (values - mean) * torch.rsqrt(var + eps) * mask


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, epsilon: float = 0.2
) -> torch.Tensor:
    """Per-position PPO value loss: ``0.5 * max((V - R)^2, (V_old + clip(V - V_old, ±eps) - R)^2)``."""
    clipped = old_values + torch.clamp(values - old_values, -epsilon, epsilon)
    return 0.5 * torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
