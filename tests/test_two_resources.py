"""The two-resource example: one Trainer, APO on the planner prompt, GRPO on the specialist adapter.

The example's `main` runs in this process (one runner thread, the proxy on a thread) while
both algorithm classes are spied on, so the test sees exactly the trajectories each received.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
voltline_rl = pytest.importorskip("voltline_rl")
voltline_apo = pytest.importorskip("voltline_apo")

import voltline  # noqa: E402
from voltline._trajectory import Trajectory  # noqa: E402

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "training" / "two_resources.py"


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("two_resources_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the runner resolves the agent by its module
    spec.loader.exec_module(module)
    return module


def test_each_algorithm_trains_its_own_resource_on_its_own_turns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    example = load_example()
    seen: dict[str, list[list[Trajectory]]] = {"apo": [], "grpo": []}
    for name, cls in (("apo", voltline_apo.APO), ("grpo", voltline_rl.GRPO)):

        def spy(self: Any, trajectories: Any, _original: Any = cls.step, _name: str = name) -> Any:
            seen[_name].append(list(trajectories))
            return _original(self, trajectories)

        monkeypatch.setattr(cls, "step", spy)

    url = f"sqlite:///{tmp_path}/two.db"
    records = example.main(["--steps", "4", "--group-size", "2", "--store", url])

    # Every step: 2 tasks x 2 rollouts, all succeeded, each algorithm got all 4 trajectories.
    assert [(r["rollouts"], r["succeeded"]) for r in records] == [(4, 4)] * 4
    for resource in ("planner", "policy"):
        assert [(r[f"{resource}/trajectories"], r[f"{resource}/skipped"]) for r in records] == [(4, 0)] * 4
    assert [len(batch) for batch in seen["apo"]] == [4] * 4 and [len(b) for b in seen["grpo"]] == [4] * 4

    # APO saw only the planner's text turns: no ids, the planner's messages, the planner's version.
    for step, batch in enumerate(seen["apo"], start=1):
        for t in batch:
            (turn,) = t.turns
            assert turn.model == "scripted-planner"
            assert turn.prompt_token_ids == [] and turn.response_token_ids == []
            assert turn.resources == {"planner": step}  # APO published a candidate every step so far
            assert turn.input_messages[0]["content"].endswith("Plan the answer to: " + t.input["question"])
            assert turn.output_messages[0]["role"] == "assistant"
    # GRPO saw only the proxy's token-level turns of the specialist, with the policy version served.
    for step, batch in enumerate(seen["grpo"], start=1):
        for t in batch:
            (turn,) = t.turns
            assert turn.prompt_token_ids and turn.response_token_ids
            assert len(turn.response_logprobs or []) == len(turn.response_token_ids)
            assert turn.resources == {"policy": step} and turn.input_messages is None
    # The proxy served exactly the adapter GRPO holds: its recomputed logprobs match the sampler's.
    assert all(r["policy/logprob_diff_max"] < 1e-4 for r in records)

    # Each resource's new versions come from its own algorithm, one per step.
    store = voltline.connect(url)
    try:
        planner = store.resource_history("planner")
        policy = store.resource_history("policy")
    finally:
        store.close()
    assert [(v.version, v.kind, v.payload["template"], v.created_by) for v in planner] == [
        (1, "prompt_template", example.START, "initial"),
        (2, "prompt_template", example.STEP, "apo step 1"),
        (3, "prompt_template", example.BRIEF, "apo step 2"),
        (4, "prompt_template", example.BEST, "apo step 3"),
    ]
    assert [(v.version, v.kind, v.created_by) for v in policy] == [(1, "lora_adapter", "initial")] + [
        (n + 1, "lora_adapter", f"grpo step {n}") for n in range(1, 5)
    ]
    assert all(v.artifact_hash for v in policy)
    assert [r.get("planner/version") for r in records] == [2, 3, 4, None]  # BEST stays live
    assert [r["policy/version"] for r in records] == [2, 3, 4, 5]
    assert [r["ran_with"] for r in records] == [{"planner": n, "policy": n} for n in range(1, 5)]

    # The planner's half of the reward is exact: START plans earn 0, BEST plans 0.5 (+ the specialist's).
    assert records[0]["mean_reward"] <= 0.5 <= records[3]["mean_reward"]
    out = capsys.readouterr().out
    assert "two resources, one Trainer" in out and "v3 -> v4" in out
