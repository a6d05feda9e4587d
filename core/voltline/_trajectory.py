"""Trajectories: what algorithms train on, built from a rollout's spans by `voltline.adapter`.

A trajectory is the ordered list of LLM turns of one rollout attempt, each with the exact
token ids the model saw and produced, plus the rewards. Algorithms that work on text alone
(prompt optimization) may ask for turns without ids: those turns have empty id lists and
carry the call's input and output messages instead. Tool results and observations are
never part of `response_token_ids`: they only ever appear inside a later turn's prompt, so a
loss taken over response tokens alone never trains on text the model did not write.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = ["MergedSequence", "Trajectory", "Turn", "merge_turns"]


class Turn(BaseModel):
    """One LLM call with the exact token ids it ran on.

    Built with `require_token_ids=False`, a turn whose call recorded no usable ids has empty
    `prompt_token_ids` / `response_token_ids`, and every turn then carries the call's
    `input_messages` / `output_messages` (the span's `gen_ai.input.messages` /
    `gen_ai.output.messages`); otherwise those stay None.
    """

    span_id: str
    sequence: int
    agent_name: str | None = None
    model: str | None = None
    prompt_token_ids: list[int]
    response_token_ids: list[int]
    response_logprobs: list[float] | None = None
    reward: float = 0.0  # assigned by the adapter's reward rule
    resources: dict[str, int] = Field(default_factory=dict)  # resource versions the call ran with
    input_messages: list[Any] | None = None
    output_messages: list[Any] | None = None


class Trajectory(BaseModel):
    """The LLM turns of one rollout attempt, in order, with its rewards."""

    rollout_id: str
    attempt_id: str
    input: Any = None
    metadata: dict[str, Any] = Field(default_factory=dict)  # the Trainer puts {"group": "<id>"} here
    reward: float | None = None  # the primary reward (None: none emitted)
    rewards: dict[str, float] = Field(default_factory=dict)  # named rewards
    turns: list[Turn] = Field(default_factory=list)


class MergedSequence(BaseModel):
    """Several turns packed into one token sequence, with a mask saying which tokens to train on.

    `loss_mask[i]` is 1 for tokens the model produced (a turn's response) and 0 for prompt,
    tool and observation tokens. `logprobs[i]` is the sampler's logprob for produced tokens
    (None where unknown or masked).
    """

    token_ids: list[int]
    loss_mask: list[int]
    logprobs: list[float | None]
    rewards: list[float]  # one per merged turn, in order
    span_ids: list[str]


def merge_turns(turns: list[Turn]) -> list[MergedSequence]:
    """Pack consecutive turns into single sequences where each prompt extends the previous one.

    A multi-turn chat usually re-sends the whole history: turn k+1's prompt starts with turn
    k's prompt + response, followed by the tool result and the next instructions. Training on
    one packed sequence then costs one forward pass instead of k. When a prompt does not
    extend the previous sequence (the chat template rewrote history, or another agent), a
    new sequence starts: packing must never invent tokens the model did not see.
    """
    merged: list[MergedSequence] = []
    current: MergedSequence | None = None
    for turn in turns:
        prompt = turn.prompt_token_ids
        if current is not None and _extends(prompt, current.token_ids):
            # Only the new part of the prompt (tool result, next user message) is appended.
            extra = prompt[len(current.token_ids) :]
            current.token_ids.extend(extra)
            current.loss_mask.extend([0] * len(extra))
            current.logprobs.extend([None] * len(extra))
        else:
            current = MergedSequence(
                token_ids=list(prompt),
                loss_mask=[0] * len(prompt),
                logprobs=[None] * len(prompt),
                rewards=[],
                span_ids=[],
            )
            merged.append(current)
        response = turn.response_token_ids
        current.token_ids.extend(response)
        current.loss_mask.extend([1] * len(response))
        if turn.response_logprobs is not None and len(turn.response_logprobs) == len(response):
            current.logprobs.extend(turn.response_logprobs)
        else:
            current.logprobs.extend([None] * len(response))
        current.rewards.append(turn.reward)
        current.span_ids.append(turn.span_id)
    return merged


def _extends(prompt: list[int], sequence: list[int]) -> bool:
    return len(prompt) >= len(sequence) and prompt[: len(sequence)] == sequence
