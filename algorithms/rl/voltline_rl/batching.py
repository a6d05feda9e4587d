"""Turn token ids into padded training batches, and score them with a causal LM.

Each turn is one sequence: ``prompt_token_ids + response_token_ids``. Only response tokens
are in the loss mask; the prompt (which holds earlier turns, tool results and observations)
is context only, so the model is never trained on text it did not write.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Batch", "logprobs_and_states", "make_batch", "token_logprobs"]


@dataclass
class Batch:
    """Right-padded sequences. ``loss_mask[b, i]`` refers to the token at ``input_ids[b, i + 1]``.

    Everything per token is aligned to *predictions*: position i of ``loss_mask`` and of
    :func:`token_logprobs` is the model's logprob at position i of the token at i + 1.
    """

    input_ids: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, L)
    position_ids: torch.Tensor  # (B, L)
    loss_mask: torch.Tensor  # (B, L - 1), float
    sampler_logprobs: torch.Tensor | None  # (B, L - 1), NaN where unknown

    @property
    def tokens(self) -> int:
        return int(self.loss_mask.sum().item())


def make_batch(
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    sampler_logprobs: Sequence[Sequence[float] | None] | None = None,
    *,
    pad_id: int = 0,
) -> Batch:
    """Pad ``prompt + response`` pairs into one batch with the loss on response tokens only."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses, strict=True)]
    width = max(lengths)
    n = len(prompts)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    attn = torch.zeros((n, width), dtype=torch.long)
    mask = torch.zeros((n, width - 1), dtype=torch.float32)
    old = torch.full((n, width - 1), float("nan")) if sampler_logprobs is not None else None
    for b, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        if not prompt:
            raise ValueError("a turn needs a prompt token: the first response token is predicted from it")
        seq = list(prompt) + list(response)
        ids[b, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attn[b, : len(seq)] = 1
        # The first response token is predicted at the last prompt position.
        start, end = len(prompt) - 1, len(seq) - 1
        mask[b, start:end] = 1.0
        given = sampler_logprobs[b] if sampler_logprobs is not None else None
        if old is not None and given is not None and len(given) == len(response):
            old[b, start:end] = torch.tensor(list(given), dtype=torch.float32)
    # From the mask, not arange: correct for any padding side and for absolute-position models.
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    return Batch(ids, attn, positions, mask, old)


def token_logprobs(model: Any, batch: Batch, device: str | torch.device = "cpu") -> torch.Tensor:
    """``log p(token[i + 1] | tokens[: i + 1])`` for every position, shape ``(B, L - 1)``.

    The raw (temperature 1) distribution, which is what the proxy reports as logprobs.
    """
    return logprobs_and_states(model, batch, device, states=False)[0]


def logprobs_and_states(
    model: Any, batch: Batch, device: str | torch.device = "cpu", *, states: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`token_logprobs` and the last layer's hidden state at each prediction position.

    The states, ``(B, L - 1, hidden)``, are what a value head reads (PPO).
    """
    out = model(
        input_ids=batch.input_ids.to(device),
        attention_mask=batch.attention_mask.to(device),
        position_ids=batch.position_ids.to(device),
        use_cache=False,
        output_hidden_states=states,
    )
    logits = out.logits[:, :-1, :].float()
    targets = batch.input_ids[:, 1:].to(device).unsqueeze(-1)
    # gather - logsumexp avoids materialising a second (B, L, V) tensor for log_softmax.
    picked = logits.gather(-1, targets).squeeze(-1)
    hidden = out.hidden_states[-1][:, :-1, :].float() if states else None
    return picked - torch.logsumexp(logits, dim=-1), hidden
