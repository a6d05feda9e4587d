"""Strict JSON: what the store accepts as attribute values, payloads and metadata."""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict

import orjson
import pytest
from pydantic import ValidationError

from voltline._models import SPAN_FIELDS, EncodedSpan, Span, SpanKind, SpanStatus, dump_json


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


# --- EncodedSpan: the emitter's check-and-encode path follows Span's rules ------------------
GOOD = {
    "span_id": "s1", "rollout_id": "r1", "attempt_id": "a1", "kind": "llm", "name": "chat m",
    "start_time": 1_700_000_000.5,
}  # fmt: skip


class Text(str):
    pass


# Each case changes one field of a good span; EncodedSpan must accept exactly what Span accepts.
CASES = [
    {}, {"parent_id": "p"}, {"parent_id": ""}, {"parent_id": "p" * 65}, {"sequence": 0}, {"sequence": 3},
    {"sequence": -1}, {"sequence": True}, {"sequence": 1.0}, {"sequence": "1"}, {"kind": SpanKind.TOOL},
    {"kind": "LLM"}, {"kind": "nope"}, {"kind": None}, {"status": "error"}, {"status": SpanStatus.OK},
    {"status": "OK"}, {"status": None}, {"name": ""}, {"name": "n" * 512}, {"name": "n" * 513},
    {"name": 5}, {"name": Text("sub")}, {"span_id": ""}, {"span_id": "x" * 65}, {"span_id": None},
    {"rollout_id": 1}, {"attempt_id": b"a"}, {"agent_name": ""}, {"agent_name": "a" * 257},
    {"agent_name": "calc"}, {"start_time": 1}, {"start_time": True}, {"start_time": "1"},
    {"start_time": float("nan")}, {"start_time": float("inf")}, {"start_time": None}, {"end_time": None},
    {"end_time": 2.5}, {"end_time": float("-inf")}, {"end_time": "2"}, {"attributes": {}},
    {"attributes": {"a": [1, {"b": None}]}}, {"attributes": OrderedDict(a=1)}, {"attributes": [("a", 1)]},
    {"attributes": None}, {"resources": {"policy": 3}}, {"resources": {"policy": True}},
    {"resources": {"policy": 1.0}}, {"resources": {1: 1}}, {"resources": None}, {"extra_field": 1},
]  # fmt: skip


@pytest.mark.parametrize("change", CASES, ids=[repr(c)[:40] for c in CASES])
def test_encoded_span_accepts_exactly_what_span_accepts(change):
    fields = {**GOOD, **change}
    try:
        expected = Span.model_validate(fields)
    except ValidationError:
        expected = None
    if expected is None:
        with pytest.raises(ValueError):
            EncodedSpan.encode(fields)
        return
    encoded = EncodedSpan.encode(fields)
    assert not encoded.coerced
    # The same values, in the form the store keeps them, and read back the same Span.
    assert encoded.to_span() == expected
    row = dict(zip(SPAN_FIELDS, encoded.row, strict=True))
    assert type(row["kind"]) is str and type(row["status"]) is str and type(row["name"]) is str
    assert orjson.loads(row["attributes"]) == expected.attributes


def test_encoded_span_stores_non_json_attributes_as_text_and_says_so():
    encoded = EncodedSpan.encode(
        {**GOOD, "attributes": {"tags": {"b"}, "nan": float("nan"), "raw": b"hi", 7: "seven"}}
    )
    assert encoded.coerced
    assert encoded["attributes"] == {"tags": ["b"], "nan": "nan", "raw": "aGk=", "7": "seven"}


def test_encoded_span_refuses_attributes_over_the_size_limit():
    with pytest.raises(ValueError, match="limit"):
        EncodedSpan.encode({**GOOD, "attributes": {"big": "x" * (8 * 1024 * 1024)}})


def test_encoded_span_reads_as_a_mapping_of_span_fields():
    encoded = EncodedSpan.encode({**GOOD, "attributes": {"a": 1}, "resources": {"p": 2}})
    assert list(encoded) == list(SPAN_FIELDS) and len(encoded) == len(SPAN_FIELDS)
    assert encoded["attributes"] == {"a": 1} and encoded["resources"] == {"p": 2}
    assert encoded["kind"] == "llm" and encoded["sequence"] is None
    with pytest.raises(KeyError):
        encoded["nope"]


def test_encoded_span_sees_a_resources_dict_changed_in_place():
    resources = {"policy": 1}
    first = EncodedSpan.encode({**GOOD, "resources": resources})
    resources["policy"] = 2
    second = EncodedSpan.encode({**GOOD, "span_id": "s2", "resources": resources})
    assert (first["resources"], second["resources"]) == ({"policy": 1}, {"policy": 2})
