"""The Algorithm base class and the registry (decorator, entry points, plugin hook).

Entry-point and hook discovery use the installed test distribution
(`pip install -e tests/fixtures/voltline-testdist`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from pydantic import ValidationError

from voltline import _plugins, algorithms
from voltline.algorithms import Algorithm, NewResource, StepResult
from voltline.hookspecs import hookimpl
from voltline_testdist.algo import EchoAlgorithm
from voltline_testdist.plugin import HookAlgorithm


@pytest.fixture(autouse=True)
def fresh_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("VOLTLINE_PLUGINS", raising=False)
    monkeypatch.delenv("VOLTLINE_DISABLE_PLUGINS", raising=False)
    _plugins.plugin_manager(refresh=True)
    yield
    monkeypatch.undo()
    _plugins.plugin_manager(refresh=True)  # drop plugins a test registered directly


@algorithms.register("test-decorated")
class Decorated(Algorithm):
    resources = ("prompt",)

    def step(self, trajectories: Sequence[Any]) -> StepResult:
        return StepResult(
            resources=[NewResource(name=name, kind="prompt_template", payload="v2") for name in trajectories],
            metrics={"n": len(trajectories)},
        )


def test_decorator_registers_and_names_the_class() -> None:
    assert Decorated.name == "test-decorated"
    assert algorithms.get("test-decorated") is Decorated
    info = algorithms.available()["test-decorated"]
    assert info == algorithms.AlgorithmInfo(
        "test-decorated", f"{__name__}:Decorated", "decorator", error=None, cls=Decorated
    )


def test_decorator_refuses_a_name_taken_by_another_class() -> None:
    with pytest.raises(ValueError, match=r"'test-decorated' is already registered by .*:Decorated"):

        @algorithms.register("test-decorated")
        class Impostor(Decorated):
            pass

    assert algorithms.get("test-decorated") is Decorated


def test_decorator_accepts_the_same_class_again_and_rejects_non_algorithms() -> None:
    assert algorithms.register("test-decorated")(Decorated) is Decorated
    with pytest.raises(TypeError, match="needs an Algorithm subclass"):
        algorithms.register("test-not-an-algorithm")(dict)  # type: ignore[type-var]
    with pytest.raises(ValueError, match="non-empty"):
        algorithms.register(" ")


def test_entry_point_algorithm_is_discovered() -> None:
    assert algorithms.get("testdist-ep") is EchoAlgorithm
    assert EchoAlgorithm.name == "testdist-ep"  # named after its entry point
    info = algorithms.available()["testdist-ep"]
    assert info.source == "entry point voltline-testdist"
    assert info.class_path == "voltline_testdist.algo:EchoAlgorithm"
    assert info.error is None


def test_broken_entry_point_is_reported_and_the_rest_still_load(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="voltline.plugins"):
        infos = algorithms.available()
    broken = infos["testdist-broken-algo"]
    assert broken.cls is None
    assert broken.class_path == "voltline_testdist.broken:Missing"
    assert broken.error == "ImportError: voltline_testdist.broken is broken on purpose"
    assert any("testdist-broken-algo" in r.getMessage() for r in caplog.records)
    assert infos["testdist-ep"].cls is EchoAlgorithm
    with pytest.raises(algorithms.AlgorithmLoadError, match="broken on purpose"):
        algorithms.get("testdist-broken-algo")


def test_hook_algorithm_is_discovered() -> None:
    assert algorithms.get("testdist-hook") is HookAlgorithm
    assert algorithms.available()["testdist-hook"].source == "plugin testdist"


def test_hook_algorithms_follow_plugin_filtering(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOLTLINE_DISABLE_PLUGINS", "testdist")
    _plugins.plugin_manager(refresh=True)
    assert "testdist-hook" not in algorithms.available()
    assert algorithms.get("testdist-ep") is EchoAlgorithm  # entry points are not plugins


class _ClashingPlugin:
    @hookimpl
    def register_algorithms(self, register: Any) -> None:
        register("testdist-ep", Decorated)  # same name as the entry point, different class
        register("test-broken-hook", "not a class")


def test_clashing_and_invalid_registrations_are_reported_not_fatal() -> None:
    _plugins.plugin_manager().register(_ClashingPlugin(), name="clashing")
    infos = algorithms.available()
    assert infos["testdist-ep"].cls is None
    assert "name clash" in (infos["testdist-ep"].error or "")
    assert infos["test-broken-hook"].error == "'not a class' is not an Algorithm subclass"
    assert infos["testdist-hook"].cls is HookAlgorithm  # the rest still work
    with pytest.raises(algorithms.AlgorithmLoadError, match="name clash"):
        algorithms.get("testdist-ep")


def test_unknown_name_lists_the_available_ones() -> None:
    with pytest.raises(algorithms.UnknownAlgorithmError) as caught:
        algorithms.get("no-such-algorithm")
    assert isinstance(caught.value, KeyError)
    message = str(caught.value)
    assert message.startswith("no algorithm named 'no-such-algorithm'; available: ")
    for name in ("test-decorated", "testdist-ep", "testdist-hook"):
        assert name in message


def test_run_step_returns_owned_resources() -> None:
    result = Decorated().run_step(["prompt"])
    assert [r.name for r in result.resources] == ["prompt"]
    assert result.metrics == {"n": 1.0}
    assert Decorated(resources=["a", "b"]).owned_resources == ("a", "b")
    assert Decorated(lr=0.1).config == {"lr": 0.1}


def test_run_step_refuses_a_resource_it_does_not_own() -> None:
    with pytest.raises(ValueError, match=r"new version of resource 'other'.*it owns: 'prompt'"):
        Decorated().run_step(["prompt", "other"])
    with pytest.raises(ValueError, match=r"resource 'prompt'.*it owns: 'x'"):
        Decorated(resources=("x",)).run_step(["prompt"])


def test_run_step_rejects_a_result_of_the_wrong_type() -> None:
    class Sloppy(Algorithm):
        name = "sloppy"

        def step(self, trajectories: Sequence[Any]) -> StepResult:
            return {"resources": []}  # type: ignore[return-value]

    with pytest.raises(TypeError, match="returned dict, expected StepResult"):
        Sloppy().run_step([])


def test_resources_must_not_be_a_bare_string() -> None:
    with pytest.raises(TypeError, match="not the string"):
        Decorated(resources="prompt")


def test_new_resource_validation() -> None:
    assert NewResource(name="a", kind="lora_adapter", payload=None, artifact=b"\0").artifact == b"\0"
    with pytest.raises(ValidationError, match="kind"):
        NewResource(name="a", kind="weights", payload={})
    with pytest.raises(ValidationError, match="JSON-serializable"):
        NewResource(name="a", kind="json", payload={"x": object()})
    with pytest.raises(ValidationError, match="JSON-serializable"):
        NewResource(name="a", kind="json", payload=float("nan"))
