"""Plugin discovery and instrumentation, end to end through the installed test distribution.

Needs `pip install -e tests/fixtures/voltline-testdist` (scripts/setup.sh does it). Tests that
instrument set VOLTLINE_PLUGINS=testdist so that real framework integrations installed in the
same environment are never patched in.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import voltline_testdist.plugin as testdist
from voltline import _plugins
from voltline.hookspecs import Integration, hookimpl, installed_in


class FakeEmitter:
    pass


@pytest.fixture(autouse=True)
def clean_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("VOLTLINE_PLUGINS", raising=False)
    monkeypatch.delenv("VOLTLINE_DISABLE_PLUGINS", raising=False)
    testdist.calls.clear()
    yield
    _plugins.uninstrument()
    testdist.calls.clear()
    monkeypatch.undo()  # rebuild below must see the real environment, not this test's
    _plugins.plugin_manager(refresh=True)


def by_name(infos: list[_plugins.PluginInfo]) -> dict[str, _plugins.PluginInfo]:
    return {info.name: info for info in infos}


def test_entry_point_plugin_is_discovered_with_its_integration() -> None:
    pm = _plugins.plugin_manager(refresh=True)
    assert pm.get_plugin("testdist") is testdist

    info = by_name(_plugins.plugins())["testdist"]
    assert info.status == "loaded" and info.loaded and info.error is None
    assert info.distribution == "voltline-testdist"
    assert info.version == "0.1.0"
    assert info.integrations == (_plugins.IntegrationInfo("testdist", available=True, installed=False),)

    found = [i for i in _plugins.integrations() if i.name == "testdist"]
    assert len(found) == 1 and isinstance(found[0], Integration)


def test_broken_plugin_is_reported_and_the_rest_still_load(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="voltline.plugins"):
        _plugins.plugin_manager(refresh=True)

    infos = by_name(_plugins.plugins())
    broken = infos["testdist-broken"]
    assert broken.status == "failed" and not broken.loaded
    assert broken.error == "ImportError: voltline_testdist.broken is broken on purpose"
    assert broken.distribution == "voltline-testdist"
    assert infos["testdist"].status == "loaded"

    [message] = [r.getMessage() for r in caplog.records if "testdist-broken" in r.getMessage()]
    assert "voltline-testdist" in message  # which distribution
    assert "VOLTLINE_DISABLE_PLUGINS=testdist-broken" in message  # what to do


def test_allow_list_loads_only_the_named_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOLTLINE_PLUGINS", " testdist , ")
    pm = _plugins.plugin_manager(refresh=True)

    infos = by_name(_plugins.plugins())
    assert infos["testdist"].status == "loaded"
    assert infos["testdist-broken"].status == "disabled"
    assert infos["testdist-broken"].error == "not listed in VOLTLINE_PLUGINS"
    assert pm.get_plugin("testdist-broken") is None
    assert all(info.status == "disabled" for name, info in infos.items() if name != "testdist")


def test_block_list_skips_the_named_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOLTLINE_DISABLE_PLUGINS", "testdist-broken,testdist")
    pm = _plugins.plugin_manager(refresh=True)

    infos = by_name(_plugins.plugins())
    assert infos["testdist"].status == "disabled"
    assert infos["testdist"].error == "listed in VOLTLINE_DISABLE_PLUGINS"
    assert infos["testdist"].integrations == ()
    assert infos["testdist-broken"].status == "disabled"
    assert pm.get_plugin("testdist") is None
    assert "testdist" not in [i.name for i in _plugins.integrations()]


def test_instrument_and_uninstrument_call_each_integration_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOLTLINE_PLUGINS", "testdist")
    _plugins.plugin_manager(refresh=True)
    emitter = FakeEmitter()

    assert _plugins.instrument(emitter) == ["testdist"]
    assert _plugins.instrument(emitter) == []  # already installed: not installed twice
    assert _plugins.installed() == ["testdist"]
    assert by_name(_plugins.plugins())["testdist"].integrations[0].installed
    assert testdist.calls == [("install", emitter)]

    assert _plugins.uninstrument() == ["testdist"]
    assert _plugins.uninstrument() == []
    assert _plugins.installed() == []
    assert testdist.calls == [("install", emitter), ("uninstall", None)]


class _Failing:
    """An integration whose install (or available) raises."""

    def __init__(self, name: str, fail_in: str) -> None:
        self.name = name
        self.fail_in = fail_in
        self.uninstalled = False

    def available(self) -> bool:
        if self.fail_in == "available":
            raise RuntimeError("cannot tell")
        return True

    def install(self, emitter: Any) -> None:
        if self.fail_in == "install":
            raise RuntimeError("framework too new")

    def uninstall(self) -> None:
        self.uninstalled = True


class _Unavailable(_Failing):
    def available(self) -> bool:
        return False


class _FailingPlugin:
    @hookimpl
    def register_integrations(self, register: Any) -> None:
        register(_Failing("bad-install", "install"))
        register(_Failing("bad-available", "available"))
        register(_Unavailable("not-here", "never"))
        register(object())  # not an Integration: ignored


class _RaisingHookPlugin:
    @hookimpl
    def register_integrations(self, register: Any) -> None:
        raise RuntimeError("hook exploded")


def test_failing_integrations_do_not_stop_the_others(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("VOLTLINE_PLUGINS", "testdist")
    pm = _plugins.plugin_manager(refresh=True)
    # Registered before and after testdist's hook, so a failure on either side is covered.
    pm.register(_FailingPlugin(), name="failing")
    pm.register(_RaisingHookPlugin(), name="raising-hook")
    emitter = FakeEmitter()

    with caplog.at_level(logging.ERROR, logger="voltline.plugins"):
        assert _plugins.instrument(emitter) == ["testdist"]
    assert testdist.calls == [("install", emitter)]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "'bad-install' failed to install" in logged and "framework too new" in logged
    assert "'bad-available': available() raised RuntimeError: cannot tell" in logged
    assert "not an Integration" in logged
    assert "hook exploded" in logged

    infos = by_name(_plugins.plugins())
    assert infos["raising-hook"].distribution is None
    assert infos["raising-hook"].error == "register_integrations raised RuntimeError: hook exploded"
    assert {i.name: (i.available, i.error) for i in infos["failing"].integrations} == {
        "bad-install": (True, None),
        "bad-available": (False, "available() raised RuntimeError: cannot tell"),
        "not-here": (False, None),
    }
    assert _plugins.uninstrument() == ["testdist"]


def test_instrument_survives_a_manager_rebuild(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOLTLINE_PLUGINS", "testdist")
    _plugins.plugin_manager(refresh=True)
    assert _plugins.instrument(FakeEmitter()) == ["testdist"]
    _plugins.plugin_manager(refresh=True)
    assert _plugins.instrument(FakeEmitter()) == []  # still known as installed
    assert _plugins.uninstrument() == ["testdist"]
    assert [event for event, _ in testdist.calls] == ["install", "uninstall"]


# version ranges ------------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]


def test_installed_in_reads_a_range_as_pyproject_does(monkeypatch: pytest.MonkeyPatch) -> None:
    versions = {"fw": "0.14.1rc1", "odd": "not a version"}

    def version(dist: str) -> str:
        if dist not in versions:
            raise importlib.metadata.PackageNotFoundError(dist)
        return versions[dist]

    monkeypatch.setattr(importlib.metadata, "version", version)
    assert installed_in("fw", ">=0.14,<0.15")  # a pre-release inside the range counts
    assert not installed_in("fw", ">=0.15")
    versions["fw"] = "0.15.0rc1"
    assert not installed_in("fw", ">=0.14,<0.15")  # a pre-release of the excluded release does not
    assert not installed_in("odd", ">=0")
    assert not installed_in("missing", ">=0")


@pytest.mark.parametrize(
    ("folder", "distribution"),
    [
        ("langchain", "langchain-core"),
        ("autogen", None),
        ("crewai", "crewai"),
        ("llamaindex", "llama-index-core"),
        ("ag2", "ag2"),
    ],
)
def test_each_plugin_checks_the_range_its_pyproject_declares(folder: str, distribution: str | None) -> None:
    project = tomllib.loads((ROOT / "plugins" / folder / "pyproject.toml").read_text())["project"]
    module = f"voltline_{folder}.plugin"
    assert project["entry-points"]["voltline"] == {folder: module}
    supported = importlib.import_module(module).SUPPORTED
    ranges = supported if isinstance(supported, dict) else {distribution: supported}
    assert {f"{dist}{spec}" for dist, spec in ranges.items()} <= set(project["dependencies"])


def floor_pins() -> dict[str, dict[str, str]]:
    """What scripts/test-floors.sh installs per plugin: {plugin: {distribution: version}}."""
    script = (ROOT / "scripts" / "test-floors.sh").read_text()
    entries = re.findall(r'^\s*"([a-z0-9]+)\|[^|]*\|([^|"]*)', script, flags=re.MULTILINE)
    return {
        plugin: {canonicalize_name(Requirement(pin).name): pin.split("==", 1)[1] for pin in pins.split()}
        for plugin, pins in entries
    }


@pytest.mark.parametrize("folder", sorted(p.parent.name for p in (ROOT / "plugins").glob("*/pyproject.toml")))
def test_the_floor_run_installs_every_declared_lower_bound(folder: str) -> None:
    # The floor run is where a declared lower bound gets tested; a bound raised in pyproject.toml
    # but not in the script would go on testing the old floor, and a new plugin would go untested.
    project = tomllib.loads((ROOT / "plugins" / folder / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *project.get("optional-dependencies", {}).get("examples", [])]
    floors = floor_pins()
    assert folder in floors, f"scripts/test-floors.sh has no floor run for plugins/{folder}"
    pins = floors[folder]
    for spec in map(Requirement, declared):
        (floor,) = [s.version for s in spec.specifier if s.operator == ">="]
        name = canonicalize_name(spec.name)
        assert name in pins, f"scripts/test-floors.sh does not pin {name} for {folder} (declared {spec})"
        pinned = pins[name]
        assert Version(pinned) == Version(floor), f"{folder}: the floor run pins {name}=={pinned}, not {spec}"
