"""APO: prompt optimization with textual gradients and a beam of templates scored by real rollouts.

The Trainer runs every rollout of a step with the latest version of each resource, so one step
scores one template. APO therefore spreads a beam search over steps:

1. the rollouts of a step are credited to the template version they ran with;
2. if candidates are waiting to be scored, the next one is published (scored next step);
3. when every candidate is scored, the beam keeps the `beam_width` templates with the best
   mean reward; each beam template not yet expanded is critiqued by the optimizer LLM from its
   low-reward rollouts and rewritten into `num_candidates` new candidates;
4. when nothing is left to score or expand (or `target_reward` / `max_rounds` is reached), the
   best template is published again, unless it is already the live one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, ClassVar

import openai

from voltline import Store
from voltline._trajectory import Trajectory
from voltline.algorithms import Algorithm, NewResource, StepResult

from .beam import Scored
from .evidence import Sample, agent_output
from .optimizer import Optimizer
from .templates import placeholders

log = logging.getLogger("voltline.apo")

__all__ = ["APO"]


class APO(Algorithm):
    """Prompt optimization of one `prompt_template` resource (payload `{"template": "..."}`).

    `template`: the starting template (also offered as `initial_resource()` for the Trainer).
    The optimizer LLM is `client` (an `openai.OpenAI`), or one built from `base_url`, `api_key`
    (default `$OPENAI_API_KEY`) and `timeout`; `model` names it. `store`: where APO reads the
    agent's outputs for critiques and the template text of versions it did not publish itself
    (the Trainer's store; also settable later with `bind_store`).
    """

    name: ClassVar[str] = "apo"
    resources: ClassVar[tuple[str, ...]] = ("prompt",)
    # Templates are judged by text and rewards: the agent may call any model, with or without ids.
    needs_token_ids: ClassVar[bool] = False

    def __init__(
        self,
        template: str | None = None,
        *,
        model: str = "gpt-4o-mini",
        base_url: str | None = None,
        api_key: str | None = None,
        client: openai.OpenAI | None = None,
        store: Store | None = None,
        beam_width: int = 2,
        num_candidates: int = 2,
        critique_samples: int = 4,
        max_rounds: int | None = None,
        target_reward: float | None = None,
        temperature: float = 0.7,
        timeout: float = 60.0,
        resources: Sequence[str] | None = None,
        **config: Any,
    ) -> None:
        super().__init__(resources=resources, **config)
        if len(self.owned_resources) != 1:
            raise ValueError(f"APO optimizes exactly one resource, got {list(self.owned_resources)}")
        if beam_width < 1 or num_candidates < 1 or critique_samples < 1:
            raise ValueError("beam_width, num_candidates and critique_samples must be >= 1")
        if template is not None and placeholders(template) is None:
            raise ValueError(f"template is not a valid format string: {template!r}")
        self.resource = self.owned_resources[0]
        self.template = template
        self.beam_width, self.num_candidates, self.critique_samples = (
            beam_width,
            num_candidates,
            critique_samples,
        )
        self.max_rounds, self.target_reward = max_rounds, target_reward
        self.store = store
        if client is None:
            # max_retries=1: a flaky optimizer costs a skipped expansion, not minutes of backoff.
            key = api_key or os.environ.get("OPENAI_API_KEY") or "none"  # local servers need none
            client = openai.OpenAI(base_url=base_url, api_key=key, timeout=timeout, max_retries=1)
        self.optimizer = Optimizer(client, model, temperature=temperature)
        self.scored: dict[str, Scored] = {}  # every template tried, by text
        self.pending: list[str] = []  # candidates waiting for their rollouts
        self.rounds = 0
        self.totals = {"candidates_proposed": 0, "candidates_malformed": 0, "optimizer_errors": 0}
        self._versions: dict[int, str] = {}  # resource version -> template text, as learnt
        self._published: str | None = None  # the text APO returned last: the next step's version
        self._live: str | None = template

    # wiring --------------------------------------------------------------------------------
    def bind_store(self, store: Store) -> None:
        """Read spans and resource versions from `store` (pass the Trainer's: `trainer.store`)."""
        self.store = store

    def initial_resource(self) -> NewResource:
        """The starting template as a version for `Trainer(initial_resources={name: ...})`."""
        if self.template is None:
            raise ValueError("APO was created without a template")
        return NewResource(name=self.resource, kind="prompt_template", payload={"template": self.template})

    @property
    def beam(self) -> list[Scored]:
        """The best scored templates, best first (at most `beam_width`)."""
        ranked = [s for s in self.scored.values() if s.mean is not None]
        ranked.sort(key=lambda s: (-(s.mean or 0.0), s.order))
        return ranked[: self.beam_width]

    @property
    def best_template(self) -> str | None:
        beam = self.beam
        return beam[0].template if beam else self._live

    # the step ------------------------------------------------------------------------------
    def step(self, trajectories: Sequence[Trajectory]) -> StepResult:
        step_rewards = self._credit(trajectories)
        counts = dict.fromkeys(self.totals, 0)
        publish: NewResource | None = None
        if not self.pending and self._may_expand():
            self._expand(counts)
        if self.pending:
            publish = self._publish(self.pending.pop(0), {"round": float(self.rounds)})
        else:
            best = self.beam[0] if self.beam else None
            if best is not None and best.template != self._live:
                publish = self._publish(best.template, {"mean_reward": best.mean or 0.0,
                                                        "rollouts": float(len(best.rewards))})  # fmt: skip
        for key, n in counts.items():
            self.totals[key] += n
        beam = self.beam
        metrics: dict[str, float] = {
            "reward_mean": sum(step_rewards) / len(step_rewards) if step_rewards else 0.0,
            "scored_rollouts": float(len(step_rewards)),
            "beam_best_reward": (beam[0].mean or 0.0) if beam else 0.0,
            "beam_size": float(len(beam)),
            "templates_tried": float(len(self.scored)),
            "pending": float(len(self.pending)),
            "round": float(self.rounds),
            **{k: float(v) for k, v in counts.items()},
        }
        return StepResult(resources=[publish] if publish else [], metrics=metrics)

    def _credit(self, trajectories: Sequence[Trajectory]) -> list[float]:
        """Add each rewarded trajectory to the template it ran with; returns the rewards added."""
        rewards = []
        newest: tuple[int, str] | None = None
        for t in trajectories:
            if t.reward is None:
                continue  # no reward: says nothing about the template
            version = next(
                (turn.resources[self.resource] for turn in t.turns if self.resource in turn.resources), None
            )
            text = self._template_of(version)
            if text is None:
                log.warning(
                    "voltline-apo: rollout %s ran with an unknown template version; ignored", t.rollout_id
                )
                continue
            scored = self.scored.get(text)
            if scored is None:
                scored = self.scored[text] = Scored(text, order=len(self.scored))
            if version is not None and version not in scored.versions:
                scored.versions.append(version)
            output = agent_output(self.store, t.rollout_id, t.attempt_id)
            scored.add(Sample(t.rollout_id, t.input, output, float(t.reward)))
            rewards.append(float(t.reward))
            if version is not None and (newest is None or version > newest[0]):
                newest = (version, text)
        if newest is not None:
            self._live = newest[1]
        return rewards

    def _template_of(self, version: int | None) -> str | None:
        if version is not None and version in self._versions:
            return self._versions[version]
        text: str | None = None
        if version is not None and self.store is not None:
            try:
                payload = self.store.get_resource(self.resource, version).payload
                text = payload.get("template") if isinstance(payload, dict) else None
            except Exception:
                log.warning("voltline-apo: could not read %s v%s", self.resource, version, exc_info=True)
        if text is None:
            # Without a store: the Trainer publishes after a step and the next step runs with it,
            # so an unseen version is what APO returned last (or the starting template).
            text = self._published if self._published is not None else self.template
        if version is not None and text is not None:
            self._versions[version] = text
        return text

    def _may_expand(self) -> bool:
        if self.max_rounds is not None and self.rounds >= self.max_rounds:
            return False
        best = self.beam[0] if self.beam else None
        return not (
            self.target_reward is not None and best is not None and (best.mean or 0.0) >= self.target_reward
        )

    def _expand(self, counts: dict[str, int]) -> None:
        """One round of textual gradients: critique and rewrite each beam template not yet expanded."""
        todo = [s for s in self.beam if not s.expanded]
        if not todo:
            return
        self.rounds += 1
        for scored in todo:
            scored.expanded = True
            proposal = self.optimizer.propose(
                scored.template, scored.worst(self.critique_samples), self.num_candidates
            )
            counts["optimizer_errors"] += proposal.errors
            counts["candidates_malformed"] += proposal.malformed
            for text in proposal.templates:
                if text in self.scored or text in self.pending:
                    continue  # already tried or queued: rescoring it teaches nothing new
                self.pending.append(text)
                counts["candidates_proposed"] += 1
        log.info("voltline-apo: round %d queued %d candidate(s)", self.rounds, len(self.pending))

    def _publish(self, text: str, metrics: dict[str, float]) -> NewResource:
        # The Trainer publishes it now and every rollout of the next step runs with it.
        self._published = self._live = text
        return NewResource(
            name=self.resource, kind="prompt_template", payload={"template": text}, metrics=metrics
        )
