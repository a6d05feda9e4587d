"""Agent frameworks' own OpenAI clients pointed at the proxy: LangChain `ChatOpenAI`, AutoGen
`OpenAIChatCompletionClient`, CrewAI `LLM` and LlamaIndex `OpenAILike`. Each call is recorded
with exact token ids, and a framework-side span joins the proxy's record on the completion id."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

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

import voltline  # noqa: E402
from voltline.proxy import join_token_ids, local_app, serve_in_thread  # noqa: E402
from voltline.proxy.modelinit import init_model  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("fw")
    model_dir = str(init_model(root / "tiny"))
    store = voltline.connect(f"sqlite:///{root}/fw.db")
    server = serve_in_thread(local_app(model_dir, store=store, name="tiny", default_max_tokens=8))
    from transformers import AutoTokenizer

    yield server, store, AutoTokenizer.from_pretrained(model_dir)
    server.stop()
    store.close()


@pytest.fixture
def attempt(env):
    claim = env[1].start_rollout({"task": "framework"})
    return claim.rollout.rollout_id, claim.attempt.attempt_id


def proxy_spans(store, rollout_id):
    assert voltline.flush()
    spans = store.query_spans(rollout_id=rollout_id, kind="llm")
    assert spans and all(s.attributes["voltline.source"] == "proxy" for s in spans)
    return spans


def decode(tokenizer, ids):
    return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def check_join(store, rollout_id, attempt_id, response_id, proxy_span):
    """A plugin span for the same call (as a framework plugin would emit it) gains the token ids."""
    with voltline.rollout(store=store, rollout_id=rollout_id, attempt_id=attempt_id):
        voltline.emit_llm(model="tiny", response_id=response_id, name="plugin llm")
    voltline.flush()
    joined = join_token_ids(store.query_spans(rollout_id=rollout_id))
    plugin = [s for s in joined if s.name == "plugin llm"]
    assert len(plugin) == 1
    assert plugin[0].attributes["response_token_ids"] == proxy_span.attributes["response_token_ids"]
    assert plugin[0].attributes["prompt_token_ids"] == proxy_span.attributes["prompt_token_ids"]
    assert plugin[0].attributes["voltline.joined_from"] == proxy_span.span_id
    assert proxy_span.span_id not in {s.span_id for s in joined}  # each call appears once


def test_langchain_chat_openai(env, attempt):
    pytest.importorskip("langchain_openai")
    from langchain_openai import ChatOpenAI

    server, store, tokenizer = env
    llm = ChatOpenAI(model="tiny", base_url=server.base_url(*attempt), api_key="unused", max_tokens=8, seed=1)
    message = llm.invoke("What is 2 + 3?")
    streamed = "".join(chunk.content for chunk in llm.stream("And 4 + 4?"))
    first, second = proxy_spans(store, attempt[0])
    assert message.response_metadata["id"] == first.attributes["gen_ai.response.id"]
    assert message.content == decode(tokenizer, first.attributes["response_token_ids"])
    assert streamed == decode(tokenizer, second.attributes["response_token_ids"])
    assert second.attributes["gen_ai.input.messages"] == [{"role": "user", "content": "And 4 + 4?"}]
    check_join(store, *attempt, message.response_metadata["id"], first)


def test_autogen_openai_chat_completion_client(env, attempt):
    pytest.importorskip("autogen_ext.models.openai")
    from autogen_core.models import ModelInfo, UserMessage
    from autogen_ext.models.openai import OpenAIChatCompletionClient

    server, store, tokenizer = env
    info = ModelInfo(
        vision=False, function_calling=True, json_output=False, family="unknown", structured_output=False
    )
    client = OpenAIChatCompletionClient(
        model="tiny", base_url=server.base_url(*attempt), api_key="unused", model_info=info, max_tokens=8
    )

    async def run():
        try:
            return await client.create([UserMessage(content="What is 2 + 3?", source="user")])
        finally:
            await client.close()

    result = asyncio.run(run())
    (span,) = proxy_spans(store, attempt[0])
    assert result.content == decode(tokenizer, span.attributes["response_token_ids"])
    assert result.usage.completion_tokens == len(span.attributes["response_token_ids"])


def test_crewai_llm(env, attempt):
    pytest.importorskip("crewai")
    from crewai import LLM

    server, store, tokenizer = env
    llm = LLM(model="openai/tiny", base_url=server.base_url(*attempt), api_key="unused", max_tokens=8)
    text = llm.call("What is 2 + 3?")
    (span,) = proxy_spans(store, attempt[0])
    assert isinstance(text, str)
    # CrewAI strips surrounding whitespace from answers; the proxy keeps the exact text.
    assert text.strip() == decode(tokenizer, span.attributes["response_token_ids"]).strip()


def test_llamaindex_openai_like(env, attempt):
    pytest.importorskip("llama_index.llms.openai_like")
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai_like import OpenAILike

    server, store, tokenizer = env
    llm = OpenAILike(model="tiny", api_base=server.base_url(*attempt), api_key="unused", is_chat_model=True,
                     context_window=1024, max_tokens=8)  # fmt: skip
    response = llm.chat([ChatMessage(role="user", content="What is 2 + 3?")])
    (span,) = proxy_spans(store, attempt[0])
    raw_ids = response.raw.choices[0].model_extra["token_ids"]  # the extras reach the framework
    assert raw_ids == span.attributes["response_token_ids"]
    assert response.message.content == decode(tokenizer, raw_ids)
    assert response.raw.id == span.attributes["gen_ai.response.id"]
