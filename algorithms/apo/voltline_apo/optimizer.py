"""The optimizer LLM: critiques a template from its low-reward rollouts (the "textual gradient")
and proposes edited templates, through any OpenAI-compatible chat completions endpoint."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import openai

from .evidence import Sample, clip
from .templates import placeholders

log = logging.getLogger("voltline.apo")

__all__ = ["Optimizer", "Proposal", "parse_candidates"]

SYSTEM = (
    "You improve the prompt template of an AI agent. The template is a Python format string: "
    "text in {braces} is filled with the task's fields and must be kept exactly."
)

_TAG = re.compile(r"<template>(.*?)</template>", re.DOTALL | re.IGNORECASE)


@dataclass
class Proposal:
    """What one expansion produced: valid new templates, and what was thrown away and why."""

    critique: str = ""
    templates: list[str] = field(default_factory=list)
    malformed: int = 0  # candidates (or whole replies) that could not be used
    errors: int = 0  # optimizer calls that failed (HTTP, timeout, empty reply)


class Optimizer:
    """Two chat calls per expansion: a critique of the failures, then `n` rewrites."""

    def __init__(self, client: openai.OpenAI, model: str, *, temperature: float = 0.7) -> None:
        self.client, self.model, self.temperature = client, model, temperature

    def propose(self, template: str, samples: Sequence[Sample], n: int) -> Proposal:
        proposal = Proposal()
        critique = self._chat(_critique_prompt(template, samples), proposal)
        if not critique:
            return proposal
        proposal.critique = critique
        reply = self._chat(_rewrite_prompt(template, critique, samples, n), proposal)
        if reply is None:
            return proposal
        proposal.templates, proposal.malformed = parse_candidates(reply, template)
        proposal.templates = proposal.templates[:n]
        return proposal

    def _chat(self, prompt: str, proposal: Proposal) -> str | None:
        try:
            response = self.client.chat.completions.create(
                model=self.model,
                messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
                temperature=self.temperature,
            )
            content = response.choices[0].message.content if response.choices else None
        except Exception as exc:  # any endpoint failure skips this expansion, never the training run
            log.warning("voltline-apo: optimizer call failed: %s: %s", type(exc).__name__, exc)
            proposal.errors += 1
            return None
        if not isinstance(content, str) or not content.strip():
            log.warning("voltline-apo: optimizer returned an empty reply")
            proposal.malformed += 1
            return None
        return content.strip()


def parse_candidates(reply: str, original: str) -> tuple[list[str], int]:
    """The `<template>...</template>` blocks of `reply` usable in place of `original`, and how many
    were rejected: a reply with no block at all counts as one malformed candidate; a block that
    does not parse as a format string, changes the placeholders, is empty, or repeats the
    original or an earlier block is malformed too."""
    blocks = _TAG.findall(reply)
    if not blocks:
        log.warning("voltline-apo: optimizer reply has no <template> block: %r", clip(reply, 200))
        return [], 1
    wanted = placeholders(original)
    kept: list[str] = []
    malformed = 0
    for block in blocks:
        text = block.strip()
        if not text or text == original.strip() or text in kept or placeholders(text) != wanted:
            log.warning("voltline-apo: skipping unusable candidate template: %r", clip(text, 200))
            malformed += 1
            continue
        kept.append(text)
    return kept, malformed


def _examples(samples: Sequence[Sample]) -> str:
    lines = []
    for i, s in enumerate(samples, 1):
        lines.append(f"### Example {i} (reward {s.reward:g})\nTask input: {clip(s.input)}")
        lines.append(f"Agent output: {s.output or '(not recorded)'}")
    return "\n".join(lines)


def _critique_prompt(template: str, samples: Sequence[Sample]) -> str:
    return (
        f"Current template:\n<template>{template}</template>\n\n"
        f"Runs of the agent with this template and the reward each earned (higher is better):\n"
        f"{_examples(samples)}\n\n"
        "Explain concisely why the template led to low rewards and which instructions would fix it."
    )


def _rewrite_prompt(template: str, critique: str, samples: Sequence[Sample], n: int) -> str:
    fields = sorted(placeholders(template) or ())
    keep = ", ".join("{" + f + "}" for f in fields) or "none"
    return (
        f"Current template:\n<template>{template}</template>\n\n"
        f"Critique of its results:\n{critique}\n\n"
        f"Write {n} improved version(s) of the template that address the critique. Keep every "
        f"placeholder exactly (placeholders: {keep}) and add no new ones. Return each version "
        "inside its own <template></template> tags and nothing else."
    )
