"""Strict JSON: what the store accepts as attribute values, payloads and metadata."""

from __future__ import annotations

import dataclasses
import math

import pytest

from voltline._models import dump_json


@pytest.mark.parametrize(
    "value",
    [
        {"content": None, "ids": [1, 2, 3], "p": -0.25},
        {"nested": [{"tool_calls": None}, [None, 1.5]]},
        (1, "a", None),
        "null",
    ],
)
def test_json_with_nulls_and_finite_floats_passes(value):
    assert dump_json(value, "attributes") is not None


@dataclasses.dataclass
class Point:
    x: float


@pytest.mark.parametrize(
    "value",
    [
        {"logprobs": [-0.1, float("-inf")]},
        {"a": None, "b": [math.nan]},
        float("inf"),
        {"p": Point(float("nan"))},
        {1: "non-string key"},
        {"s": {1, 2}},
        {"b": b"bytes"},
        {"o": object()},
    ],
)
def test_non_json_values_are_refused_with_the_field_named(value):
    with pytest.raises(ValueError, match=r"^attributes must be JSON-serializable"):
        dump_json(value, "attributes")


def test_size_limit_counts_bytes_not_characters():
    text = "é" * 600  # 1,200 bytes of UTF-8, 600 characters
    with pytest.raises(ValueError, match="bytes as JSON; the limit is 1,000"):
        dump_json(text, "attributes", limit=1000)
    assert dump_json("e" * 600, "attributes", limit=1000)
