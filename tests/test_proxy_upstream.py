"""The upstream backend, in front of a second proxy acting as a vLLM-like server: token ids pass
through; from a server that returns none, they are computed with the tokenizer and marked so."""

from __future__ import annotations

from typing import Any

import openai
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import voltline  # noqa: E402
from voltline.proxy import create_app, serve_in_thread, upstream_app  # noqa: E402
from voltline.proxy.localserve import LocalBackend, Result  # noqa: E402
from voltline.proxy.modelinit import init_model  # noqa: E402

torch.set_num_threads(1)
MESSAGES = [{"role": "user", "content": "Say something."}]


class WithoutTokenIds:
    """A server like OpenAI's or llama.cpp's: the same answers, no token ids anywhere."""

    kind = "local"

    def __init__(self, inner: LocalBackend) -> None:
        self.inner = inner

    async def models(self) -> list[str]:
        return await self.inner.models()

    @staticmethod
    def _strip(data: dict[str, Any]) -> dict[str, Any]:
        data.pop("prompt_token_ids", None)
        for choice in data.get("choices", []):
            choice.pop("token_ids", None)
            choice.pop("prompt_token_ids", None)
        return data

    async def _wrap(self, result: Result) -> Result:
        if result.response is not None:
            return Result(result.record, response=self._strip(result.response))

        async def chunks():
            async for chunk in result.chunks:
                yield self._strip(chunk)

        return Result(result.record, chunks=chunks())

    async def chat(self, req, body=None) -> Result:
        return await self._wrap(await self.inner.chat(req, body))

    async def completion(self, req, body=None) -> Result:
        return await self._wrap(await self.inner.completion(req, body))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("up")
    model_dir = str(init_model(root / "tiny"))
    store = voltline.connect(f"sqlite:///{root}/up.db")
    vllm_like = serve_in_thread(create_app(LocalBackend(model_dir, name="tiny", default_max_tokens=8)))
    bare = serve_in_thread(
        create_app(WithoutTokenIds(LocalBackend(model_dir, name="tiny", default_max_tokens=8)))
    )
    proxy = serve_in_thread(upstream_app(vllm_like.base_url(), store=store, tokenizer=model_dir))
    proxy_bare = serve_in_thread(upstream_app(bare.base_url(), store=store, tokenizer=model_dir))
    yield model_dir, store, vllm_like, proxy, proxy_bare
    for server in (proxy, proxy_bare, vllm_like, bare):
        server.stop()
    store.close()


@pytest.fixture(scope="module")
def tokenizer(env):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(env[0])


def new_attempt(store) -> tuple[str, str]:
    claim = store.start_rollout({"task": "upstream"})
    return claim.rollout.rollout_id, claim.attempt.attempt_id


def stream_chat(client, **kw) -> tuple[list[int] | None, list[int], str, list[float]]:
    prompt, ids, text, lps = None, [], "", []
    for chunk in client.chat.completions.create(stream=True, **kw):
        prompt = chunk.model_extra.get("prompt_token_ids") or prompt
        for ch in chunk.choices:
            ids += ch.model_extra.get("token_ids") or []
            text += ch.delta.content or ""
            lps += [t.logprob for t in (ch.logprobs.content if ch.logprobs and ch.logprobs.content else [])]
    return prompt, ids, text, lps


def test_upstream_token_ids_pass_through(env, tokenizer):
    _, store, vllm_like, proxy, _ = env
    rid, aid = new_attempt(store)
    direct = openai.OpenAI(base_url=vllm_like.base_url(), api_key="unused")
    client = openai.OpenAI(base_url=proxy.base_url(rid, aid), api_key="unused")
    want = direct.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=6, seed=4)
    got = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=6, seed=4)
    assert got.model_extra["prompt_token_ids"] == want.model_extra["prompt_token_ids"]
    ids = got.choices[0].model_extra["token_ids"]
    assert (
        ids == want.choices[0].model_extra["token_ids"]
        and got.choices[0].message.content == want.choices[0].message.content
    )
    lps = [t.logprob for t in got.choices[0].logprobs.content]

    s_prompt, s_ids, s_text, s_lps = stream_chat(
        client, model="tiny", messages=MESSAGES, max_tokens=6, seed=4
    )
    assert (s_prompt, s_ids, s_text, s_lps) == (
        want.model_extra["prompt_token_ids"],
        ids,
        got.choices[0].message.content,
        lps,
    )
    c = client.completions.create(model="tiny", prompt="Hello", max_tokens=4, seed=2)
    assert tokenizer.decode(c.choices[0].model_extra["token_ids"]) == c.choices[0].text

    assert voltline.flush()
    spans = store.query_spans(rollout_id=rid, kind="llm")
    assert [s.attributes["voltline.token_ids_source"] for s in spans] == ["upstream"] * 3
    assert [s.attributes["voltline.proxy.backend"] for s in spans] == ["upstream"] * 3
    assert spans[0].attributes["gen_ai.response.id"] == got.id
    assert (
        spans[0].attributes["response_token_ids"] == ids and spans[1].attributes["response_token_ids"] == ids
    )
    assert spans[0].attributes["response_logprobs"] == lps == spans[1].attributes["response_logprobs"]
    assert spans[2].attributes["prompt_token_ids"] == tokenizer.encode("Hello", add_special_tokens=False)


def test_missing_token_ids_are_computed_with_the_tokenizer(env, tokenizer):
    _, store, _, _, proxy_bare = env
    rid, aid = new_attempt(store)
    client = openai.OpenAI(base_url=proxy_bare.base_url(rid, aid), api_key="unused")
    r = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=6, seed=4)
    ids = r.choices[0].model_extra["token_ids"]
    assert r.model_extra["prompt_token_ids"] == list(
        tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True, return_dict=False)
    )
    assert ids == tokenizer.encode(r.choices[0].message.content, add_special_tokens=False)
    s_prompt, s_ids, s_text, _ = stream_chat(client, model="tiny", messages=MESSAGES, max_tokens=6, seed=4)
    assert s_prompt == r.model_extra["prompt_token_ids"] and s_ids == tokenizer.encode(
        s_text, add_special_tokens=False
    )
    assert voltline.flush()
    spans = store.query_spans(rollout_id=rid, kind="llm")
    assert [s.attributes["voltline.token_ids_source"] for s in spans] == ["retokenized"] * 2
    assert spans[0].attributes["response_token_ids"] == ids


def test_upstream_errors_are_passed_on(env):
    _, _, _, proxy, _ = env
    client = openai.OpenAI(base_url=proxy.base_url(), api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="other", messages=MESSAGES)
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=100000)
    assert [m.id for m in client.models.list()] == ["tiny", "tiny:base"]
    ok = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2)
    assert ok.choices[0].model_extra["token_ids"]
