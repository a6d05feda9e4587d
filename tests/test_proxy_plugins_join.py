"""Framework plugins and the LLM proxy together: each framework's own OpenAI client, pointed at
the proxy's per-attempt URL, makes one call with its plugin instrumented. The plugin's `llm`
span and the proxy's `llm` span share `gen_ai.response.id`, and after `join_token_ids` the
plugin's span carries exactly the proxy's token ids and logprobs, which decode to the text the
framework returned."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

# CrewAI phones home unless told not to; tiktoken downloads encodings unless given a cache.
os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")
os.environ.setdefault("CREWAI_DISABLE_VERSION_CHECK", "true")
try:
    import llama_index.core

    os.environ.setdefault(
        "TIKTOKEN_CACHE_DIR", str(Path(llama_index.core.__file__).parent / "_static" / "tiktoken_cache")
    )
except ImportError:
    pass

from _plugin_env import only_plugins  # noqa: E402

import voltline  # noqa: E402
from voltline.proxy import join_token_ids, local_app, serve_in_thread  # noqa: E402
from voltline.proxy.modelinit import init_model  # noqa: E402

torch.set_num_threads(1)

TOKEN_KEYS = ("prompt_token_ids", "response_token_ids", "response_logprobs")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, voltline.Store, Any]]:
    root = tmp_path_factory.mktemp("plugins_join")
    model_dir = str(init_model(root / "tiny"))
    store = voltline.connect(f"sqlite:///{root}/join.db")
    server = serve_in_thread(local_app(model_dir, store=store, name="tiny", default_max_tokens=8))
    from transformers import AutoTokenizer

    yield server, store, AutoTokenizer.from_pretrained(model_dir)
    server.stop()
    store.close()


@contextmanager
def instrumented(name: str) -> Iterator[None]:
    """Only the named plugin is loaded and installed; everything is put back afterwards."""
    with only_plugins(name):
        assert voltline.instrument() == [name]
        yield


@contextmanager
def in_attempt(env: tuple[Any, voltline.Store, Any]) -> Iterator[dict[str, Any]]:
    """A claimed attempt, joined with `voltline.rollout`; yields the base URL for its calls."""
    server, store, _ = env
    claim = store.start_rollout({"task": "plugin join"})
    rid, aid = claim.rollout.rollout_id, claim.attempt.attempt_id
    info = {"rollout_id": rid, "base_url": server.base_url(rid, aid)}
    with voltline.rollout(store=store, rollout_id=rid, attempt_id=aid):
        yield info


def check_join(env: tuple[Any, voltline.Store, Any], rollout_id: str, text: str) -> voltline.Span:
    """One plugin `llm` span and one proxy `llm` span, joined on the response id."""
    _, store, tokenizer = env
    assert voltline.flush()
    spans = store.query_spans(rollout_id=rollout_id)
    llm = [s for s in spans if s.kind == "llm"]
    (proxy,) = [s for s in llm if s.attributes.get("voltline.source") == "proxy"]
    (plugin,) = [s for s in llm if s.attributes.get("voltline.source") != "proxy"]
    response_id = proxy.attributes["gen_ai.response.id"]
    assert response_id and plugin.attributes.get("gen_ai.response.id") == response_id
    assert all(proxy.attributes.get(k) for k in TOKEN_KEYS)

    joined = join_token_ids(spans)
    assert proxy.span_id not in {s.span_id for s in joined}  # the call appears once
    (plugin_joined,) = [s for s in joined if s.span_id == plugin.span_id]
    for key in TOKEN_KEYS:
        assert plugin_joined.attributes[key] == proxy.attributes[key], key
    assert plugin_joined.attributes["voltline.joined_from"] == proxy.span_id
    ids = plugin_joined.attributes["response_token_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False) == text
    return plugin_joined


@pytest.mark.parametrize("stream", [False, True])
def test_langchain_chat_openai(env: Any, stream: bool) -> None:
    pytest.importorskip("langchain_openai")
    pytest.importorskip("voltline_langchain")
    from langchain_openai import ChatOpenAI

    with instrumented("langchain"), in_attempt(env) as attempt:
        # Streamed chunks carry no completion id; with the response headers kept, the plugin
        # reads it from the proxy's x-voltline-completion-id header.
        llm = ChatOpenAI(model="tiny", base_url=attempt["base_url"], api_key="unused", max_tokens=8, seed=1,
                         include_response_headers=stream)  # fmt: skip
        if stream:
            text = "".join(chunk.content for chunk in llm.stream("What is 2 + 3?"))
        else:
            message = llm.invoke("What is 2 + 3?")
            text = message.content
    span = check_join(env, attempt["rollout_id"], text)
    assert span.attributes.get("gen_ai.request.stream", False) is stream  # set only when streamed
    if not stream:
        assert span.attributes["gen_ai.response.id"] == message.response_metadata["id"]


def test_autogen_openai_chat_completion_client(env: Any) -> None:
    pytest.importorskip("autogen_ext.models.openai")
    pytest.importorskip("voltline_autogen")
    from autogen_core.models import ModelInfo, UserMessage
    from autogen_ext.models.openai import OpenAIChatCompletionClient

    info = ModelInfo(
        vision=False, function_calling=True, json_output=False, family="unknown", structured_output=False
    )
    with instrumented("autogen"), in_attempt(env) as attempt:
        client = OpenAIChatCompletionClient(
            model="tiny", base_url=attempt["base_url"], api_key="unused", model_info=info, max_tokens=8
        )

        async def run() -> Any:
            try:
                # Non-streaming: AutoGen logs no provider response for create_stream, so a
                # streamed call's span has no gen_ai.response.id to join on (docs/plugins/autogen.md).
                return await client.create([UserMessage(content="What is 2 + 3?", source="user")])
            finally:
                await client.close()

        result = asyncio.run(run())
    check_join(env, attempt["rollout_id"], result.content)


@pytest.mark.parametrize("stream", [False, True])
def test_crewai_llm(env: Any, stream: bool) -> None:
    pytest.importorskip("crewai")
    pytest.importorskip("voltline_crewai")
    from crewai import LLM
    from crewai.events.event_bus import crewai_event_bus

    with instrumented("crewai"), in_attempt(env) as attempt:
        llm = LLM(model="openai/tiny", base_url=attempt["base_url"], api_key="unused", max_tokens=8,
                  stream=stream)  # fmt: skip
        text = llm.call("What is 2 + 3?")
        # CrewAI handles events on a thread pool; outside kickoff nobody waits for them.
        crewai_event_bus.flush()
    assert isinstance(text, str)
    span = check_join(env, attempt["rollout_id"], text)
    assert span.attributes["gen_ai.request.stream"] is stream


@pytest.mark.parametrize("stream", [False, True])
def test_llamaindex_openai_like(env: Any, stream: bool) -> None:
    pytest.importorskip("llama_index.llms.openai_like")
    pytest.importorskip("voltline_llamaindex")
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai_like import OpenAILike

    with instrumented("llamaindex"), in_attempt(env) as attempt:
        llm = OpenAILike(model="tiny", api_base=attempt["base_url"], api_key="unused", is_chat_model=True,
                         context_window=1024, max_tokens=8)  # fmt: skip
        messages = [ChatMessage(role="user", content="What is 2 + 3?")]
        if stream:
            *_, response = llm.stream_chat(messages)  # each response holds the text so far
        else:
            response = llm.chat(messages)
    span = check_join(env, attempt["rollout_id"], response.message.content)
    assert span.attributes["gen_ai.response.id"] == response.raw.id
    assert span.attributes["gen_ai.request.stream"] is stream
