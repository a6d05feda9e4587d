"""Pieces of the proxy on their own: tool-call parsing (whole and streamed, through the real
`openai` client with a scripted engine), streaming text, stop strings, and `join_token_ids`."""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict

import openai
import pytest

pytest.importorskip("transformers")

import voltline
from voltline.proxy import create_app, join_token_ids, serve_in_thread
from voltline.proxy.chat import IncrementalText, cut_at_stop, parse_tool_calls
from voltline.proxy.localserve import LocalBackend
from voltline.proxy.modelinit import init_model

CALL = '<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>'
TOOLS = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    # A tokenizer only: the model weights are not needed here (and init is about a second).
    return AutoTokenizer.from_pretrained(init_model(tmp_path_factory.mktemp("u") / "tiny", num_layers=1))


class ScriptedEngine:
    """Stands in for the model: every request gets the same scripted tokens, logprob -1."""

    context_length = 1024

    def __init__(self, tokenizer, text: str) -> None:
        self.tokenizer = tokenizer
        end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.ids = [*tokenizer.encode(text, add_special_tokens=False), end]

    def submit(self, job):
        job.loop = asyncio.get_running_loop()
        for c in range(job.n):
            for tok in self.ids:
                job.put(("token", c, tok, -1.0, None))
            job.put(("done", c, "stop"))
        return job

    def close(self) -> None:
        pass


def scripted_backend(tokenizer, text: str) -> LocalBackend:
    backend = object.__new__(LocalBackend)
    backend.name, backend.store, backend.adapter, backend.default_max_tokens = "tiny", None, None, 16
    backend.engine, backend.tokenizer = ScriptedEngine(tokenizer, text), tokenizer
    backend._token_text, backend._token_bytes = {}, {}
    backend._known_versions, backend._prompts = set(), OrderedDict()
    return backend


def test_tool_calls_come_back_structured_whole_and_streamed(tokenizer):
    server = serve_in_thread(create_app(scripted_backend(tokenizer, "Let me add. " + CALL)))
    try:
        client = openai.OpenAI(base_url=server.base_url(), api_key="unused")
        msgs = [{"role": "user", "content": "2+3?"}]
        r = client.chat.completions.create(model="tiny", messages=msgs, tools=TOOLS)
        choice = r.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content == "Let me add. "
        (call,) = choice.message.tool_calls
        assert call.function.name == "add" and json.loads(call.function.arguments) == {"a": 2, "b": 3}
        ids = choice.model_extra["token_ids"]
        assert tokenizer.decode(ids, skip_special_tokens=True) == "Let me add. " + CALL  # ids cover the call

        content, calls, finish, s_ids = "", {}, None, []
        for chunk in client.chat.completions.create(model="tiny", messages=msgs, tools=TOOLS, stream=True):
            for ch in chunk.choices:
                content += ch.delta.content or ""
                s_ids += ch.model_extra.get("token_ids") or []
                for tc in ch.delta.tool_calls or []:
                    calls.setdefault(tc.index, []).append(tc)
                finish = ch.finish_reason or finish
        assert content == "Let me add. " and finish == "tool_calls" and s_ids == ids
        assert calls[0][0].function.name == "add" and json.loads(calls[0][0].function.arguments) == {
            "a": 2,
            "b": 3,
        }

        # Without tools in the request the same text is plain content.
        plain = client.chat.completions.create(model="tiny", messages=msgs)
        assert (
            plain.choices[0].message.content == "Let me add. " + CALL
            and not plain.choices[0].message.tool_calls
        )
        # A stop string cuts the text (not the ids), whole and streamed alike.
        cut = client.chat.completions.create(model="tiny", messages=msgs, stop=["add"])
        assert cut.choices[0].message.content == "Let me "
        streamed = "".join(
            ch.delta.content or ""
            for chunk in client.chat.completions.create(model="tiny", messages=msgs, stop="add", stream=True)
            for ch in chunk.choices
        )
        assert streamed == "Let me "
    finally:
        server.stop()


def test_parse_tool_calls_keeps_what_is_not_a_call():
    text, calls = parse_tool_calls("a" + CALL + "b<tool_call>not json</tool_call>")
    assert [c["function"]["name"] for c in calls] == ["add"]
    assert text == "ab<tool_call>not json</tool_call>"
    assert parse_tool_calls("no calls") == ("no calls", [])
    assert cut_at_stop("hello world", ["o w", "zz"]) == ("hell", True)
    assert cut_at_stop("hello", []) == ("hello", False)


def test_incremental_text_adds_up_and_waits_for_whole_characters(tokenizer):
    text = "héllo 🎉 wörld " + CALL
    inc = IncrementalText(tokenizer, ["<tool_call>"])
    deltas = [inc.add(t) for t in tokenizer.encode(text, add_special_tokens=False)]
    assert "".join(deltas) == "héllo 🎉 wörld "
    assert all("\ufffd" not in d for d in deltas)
    assert inc.text() == text


def span(span_id, **attrs):
    return voltline.Span(span_id=span_id, rollout_id="r", attempt_id="a", kind="llm", name=span_id,
                         start_time=1.0, attributes=attrs)  # fmt: skip


def test_join_token_ids():
    proxy = span("p", **{"voltline.source": "proxy", "gen_ai.response.id": "c1", "prompt_token_ids": [1],
                         "response_token_ids": [2, 3], "response_logprobs": [-0.1, -0.2],
                         "voltline.token_ids_source": "model"})  # fmt: skip
    other_proxy = span(
        "q", **{"voltline.source": "proxy", "gen_ai.response.id": "c9", "response_token_ids": [7]}
    )
    plugin = span("x", **{"gen_ai.response.id": "c1", "gen_ai.request.model": "m"})
    unrelated = span("y", **{"gen_ai.response.id": "c2"})
    out = join_token_ids([proxy, plugin, unrelated, other_proxy])
    assert [s.span_id for s in out] == ["x", "y", "q"]
    assert (
        out[0].attributes["response_token_ids"] == [2, 3] and out[0].attributes["voltline.joined_from"] == "p"
    )
    assert out[0].attributes["gen_ai.request.model"] == "m" and "response_token_ids" not in out[1].attributes
    assert plugin.attributes.get("response_token_ids") is None  # inputs are not modified
    kept = join_token_ids([proxy, plugin], keep_joined_proxy_spans=True)
    assert [s.span_id for s in kept] == ["p", "x"]


def test_cli_model_init_and_serve_arguments(tmp_path):
    from typer.testing import CliRunner

    from voltline.cli import app

    runner = CliRunner()
    result = runner.invoke(
        app, ["model", "init", str(tmp_path / "m"), "--layers", "1", "--hidden-size", "32"]
    )
    assert result.exit_code == 0, result.output
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(tmp_path / "m")
    assert (config.num_hidden_layers, config.hidden_size) == (1, 32)
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    assert tok.decode(tok.encode("héllo wörld 🎉")) == "héllo wörld 🎉" and tok.chat_template
    # One backend, exactly.
    assert runner.invoke(app, ["serve"]).exit_code != 0
    both = ["serve", "--model", str(tmp_path / "m"), "--upstream", "http://x/v1"]
    assert runner.invoke(app, both).exit_code != 0
