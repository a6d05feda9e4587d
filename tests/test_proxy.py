"""The LLM proxy's local backend through the real `openai` client: exact token ids and logprobs,
streaming, spans in the store, batching with left padding, errors, and LoRA hot swap."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import voltline  # noqa: E402
from voltline.proxy import local_app, serve_in_thread  # noqa: E402
from voltline.proxy.modelinit import init_model  # noqa: E402

torch.set_num_threads(1)
MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2 + 3?"}]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(init_model(tmp_path_factory.mktemp("tiny") / "tiny"))


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def base_model(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = voltline.connect(f"sqlite:///{tmp_path_factory.mktemp('db')}/proxy.db")
    yield s
    s.close()


@pytest.fixture(scope="module")
def proxy(model_dir, store):
    server = serve_in_thread(local_app(model_dir, store=store, name="tiny", default_max_tokens=12))
    yield server
    server.stop()


@pytest.fixture
def attempt(store):
    claim = store.start_rollout({"task": "proxy"})
    return claim.rollout.rollout_id, claim.attempt.attempt_id


def forward_logprobs(model, prompt: list[int], completion: list[int]) -> list[float]:
    """Log-probabilities of `completion` after `prompt`, from one plain forward pass."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + completion])).logits[0].float()
    logp = torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)
    return logp.gather(1, torch.tensor(completion).unsqueeze(1)).squeeze(1).tolist()


def decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def llm_spans(store, rollout_id: str) -> list[voltline.Span]:
    assert voltline.flush()
    return store.query_spans(rollout_id=rollout_id, kind="llm")


def assert_close(got: list[float], want: list[float]) -> None:
    assert len(got) == len(want)
    assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < 1e-4


def test_sync_chat_returns_exact_ids_and_logprobs_and_records_them(
    proxy, store, attempt, tokenizer, base_model
):
    client = openai.OpenAI(base_url=proxy.base_url(*attempt), api_key="unused")
    r = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=10, seed=7)
    choice = r.choices[0]
    prompt_ids, ids = r.model_extra["prompt_token_ids"], choice.model_extra["token_ids"]
    assert prompt_ids == list(
        tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True, return_dict=False)
    )
    assert 1 <= len(ids) <= 10 and r.usage.completion_tokens == len(ids)
    assert r.usage.prompt_tokens == len(prompt_ids)
    assert decode(tokenizer, ids) == choice.message.content
    logprobs = [t.logprob for t in choice.logprobs.content]
    assert_close(logprobs, forward_logprobs(base_model, prompt_ids, ids))

    (span,) = llm_spans(store, attempt[0])
    assert span.attempt_id == attempt[1]
    a = span.attributes
    assert a["voltline.source"] == "proxy" and a["voltline.token_ids_source"] == "model"
    assert a["gen_ai.response.id"] == r.id
    assert a["prompt_token_ids"] == prompt_ids and a["response_token_ids"] == ids
    assert a["response_logprobs"] == logprobs
    assert a["gen_ai.input.messages"] == MESSAGES
    assert a["gen_ai.output.messages"] == [{"role": "assistant", "content": choice.message.content}]
    assert a["gen_ai.usage.output_tokens"] == len(ids)


def test_token_bytes_are_the_raw_bytes(proxy, tokenizer):
    client = openai.OpenAI(base_url=proxy.base_url(), api_key="unused")
    r = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12, seed=3)
    raw = b"".join(bytes(t.bytes) for t in r.choices[0].logprobs.content)
    # Byte-level pieces joined are exactly the UTF-8 of the text (lossy only where the model
    # produced invalid UTF-8, which the text shows as U+FFFD).
    assert raw.decode("utf-8", errors="replace") == r.choices[0].message.content


def test_async_concurrent_requests_are_exact(proxy, store, attempt, tokenizer, base_model):
    client = openai.AsyncOpenAI(base_url=proxy.base_url(*attempt), api_key="unused")
    prompts = [[{"role": "user", "content": "hi " * k}] for k in (1, 5, 11, 2)]  # different lengths

    async def main():
        return await asyncio.gather(
            *[
                client.chat.completions.create(model="tiny", messages=m, max_tokens=8, seed=i)
                for i, m in enumerate(prompts)
            ]
        )

    results = asyncio.run(main())
    for r in results:
        prompt_ids, ids = r.model_extra["prompt_token_ids"], r.choices[0].model_extra["token_ids"]
        assert decode(tokenizer, ids) == r.choices[0].message.content
        assert_close(
            [t.logprob for t in r.choices[0].logprobs.content], forward_logprobs(base_model, prompt_ids, ids)
        )
    spans = {s.attributes["gen_ai.response.id"]: s for s in llm_spans(store, attempt[0])}
    assert set(spans) == {r.id for r in results}
    for r in results:
        assert spans[r.id].attributes["response_token_ids"] == r.choices[0].model_extra["token_ids"]


def test_streaming_chat_carries_ids_and_logprobs(proxy, store, attempt, tokenizer, base_model):
    client = openai.OpenAI(base_url=proxy.base_url(*attempt), api_key="unused")
    stream = client.chat.completions.create(
        model="tiny",
        messages=MESSAGES,
        max_tokens=12,
        seed=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    prompt_ids, ids, logprobs, text, finish, ids_seen = None, [], [], "", None, set()
    for chunk in stream:
        ids_seen.add(chunk.id)
        if chunk.model_extra.get("prompt_token_ids"):
            prompt_ids = chunk.model_extra["prompt_token_ids"]
        if chunk.usage:
            assert chunk.usage.completion_tokens == len(ids)
        for ch in chunk.choices:
            ids += ch.model_extra.get("token_ids") or []
            text += ch.delta.content or ""
            if ch.logprobs and ch.logprobs.content:
                logprobs += [t.logprob for t in ch.logprobs.content]
            finish = ch.finish_reason or finish
    assert finish in ("stop", "length") and len(ids) == len(logprobs) >= 1
    assert decode(tokenizer, ids) == text
    assert_close(logprobs, forward_logprobs(base_model, prompt_ids, ids))
    (span,) = llm_spans(store, attempt[0])
    assert span.attributes["response_token_ids"] == ids and span.attributes["prompt_token_ids"] == prompt_ids
    assert span.attributes["gen_ai.response.id"] == ids_seen.pop()
    assert span.attributes["gen_ai.output.messages"][0]["content"] == text


def test_completions_with_token_id_prompt_whole_and_streamed(proxy, store, attempt, tokenizer, base_model):
    client = openai.OpenAI(base_url=proxy.base_url(*attempt), api_key="unused")
    prompt = tokenizer.encode("The answer is", add_special_tokens=False)
    r = client.completions.create(model="tiny", prompt=prompt, max_tokens=6, seed=1, logprobs=2)
    ids = r.choices[0].model_extra["token_ids"]
    assert r.model_extra["prompt_token_ids"] == prompt and decode(tokenizer, ids) == r.choices[0].text
    assert_close(r.choices[0].logprobs.token_logprobs, forward_logprobs(base_model, prompt, ids))
    assert all(len(top) >= 1 for top in r.choices[0].logprobs.top_logprobs)

    stream = client.completions.create(
        model="tiny", prompt="The answer is", max_tokens=6, seed=1, stream=True
    )
    s_ids, s_lp, s_text, s_prompt = [], [], "", None
    for chunk in stream:
        s_prompt = chunk.model_extra.get("prompt_token_ids") or s_prompt
        for ch in chunk.choices:
            s_ids += ch.model_extra.get("token_ids") or []
            s_text += ch.text
            if ch.logprobs:
                s_lp += ch.logprobs.token_logprobs
    assert s_prompt == prompt and decode(tokenizer, s_ids) == s_text
    assert s_ids == ids  # same seed, same prompt ids: the same sample
    assert_close(s_lp, forward_logprobs(base_model, prompt, s_ids))
    spans = llm_spans(store, attempt[0])
    assert [s.attributes["gen_ai.operation.name"] for s in spans] == ["text_completion"] * 2
    assert [s.attributes["response_token_ids"] for s in spans] == [ids, s_ids]


def test_headers_attribute_calls_and_unattributed_calls_are_not_recorded(proxy, store, attempt):
    rid, aid = attempt
    client = openai.OpenAI(
        base_url=proxy.base_url(),
        api_key="unused",
        default_headers={"X-Voltline-Rollout-Id": rid, "X-Voltline-Attempt-Id": aid},
    )
    r = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3)
    plain = openai.OpenAI(base_url=proxy.base_url(), api_key="unused")
    plain.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3)
    (span,) = llm_spans(store, rid)
    assert span.attempt_id == aid and span.attributes["gen_ai.response.id"] == r.id


def test_n_samples_and_greedy(proxy, store, attempt, tokenizer, base_model):
    client = openai.OpenAI(base_url=proxy.base_url(*attempt), api_key="unused")
    r = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=6, n=3, seed=11)
    assert [c.index for c in r.choices] == [0, 1, 2]
    for c in r.choices:
        assert_close(
            [t.logprob for t in c.logprobs.content],
            forward_logprobs(base_model, r.model_extra["prompt_token_ids"], c.model_extra["token_ids"]),
        )
    spans = llm_spans(store, attempt[0])
    assert sorted(s.attributes["gen_ai.response.choice_index"] for s in spans) == [0, 1, 2]
    g1 = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=6, temperature=0)
    g2 = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=6, temperature=0)
    assert g1.choices[0].model_extra["token_ids"] == g2.choices[0].model_extra["token_ids"]


def test_tools_are_rendered_into_the_prompt_and_tool_history_is_accepted(proxy, tokenizer):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "add",
                "description": "Add two numbers",
                "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}},
            },
        }
    ]
    history = [
        *MESSAGES,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "5"},
    ]
    client = openai.OpenAI(base_url=proxy.base_url(), api_key="unused")
    r = client.chat.completions.create(model="tiny", messages=history, tools=tools, max_tokens=4)
    prompt = decode(tokenizer, r.model_extra["prompt_token_ids"])
    assert (
        '"name": "add"' in prompt
        and '<tool_call>{"name": "add", "arguments": {"a": 2}}</tool_call>' in prompt
    )
    assert prompt.endswith("tool\n5\nassistant\n")


def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(proxy):
    http = httpx.Client(base_url=proxy.url)
    cases = [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        (b'{"model": "tiny"}', 400, "messages"),
        (b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}', 404, "model"),
        (
            b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": 5}',
            400,
            "temperature",
        ),
        (b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "n": 0}', 400, "n"),
        (
            b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}',
            400,
            "max_tokens",
        ),
        (
            b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 5000}',
            400,
            "messages",
        ),
        (b'{"model": "tiny", "messages": ["hello"]}', 400, "messages"),
    ]
    for body, status, param in cases:
        resp = http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
        assert resp.status_code == status, body
        err = resp.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["message"]
        assert err["type"] == "invalid_request_error" and err["param"] == param, body
    assert http.get("/v1/nothing").status_code == 404
    client = openai.OpenAI(base_url=proxy.base_url(), api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x " * 2000}])
    assert info.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny", prompt=[10**6], max_tokens=2)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="tiny:7", messages=MESSAGES)
    ok = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2)
    assert ok.choices[0].model_extra["token_ids"]
    assert http.get("/health").json()["status"] == "ok"
    assert [m.id for m in client.models.list()] == ["tiny", "tiny:base"]


def test_engine_batches_left_padded_prompts_exactly(proxy, tokenizer, base_model):
    """Rows of very different lengths decoded in one batch match unpadded forward passes."""
    from voltline.proxy.local import GenJob, Sampling

    engine = proxy.server.config.app.state.backend.engine
    prompts = [[5, 6, 7], list(range(20, 60)), [9]]

    async def run():
        jobs = [GenJob(p, Sampling(max_tokens=5, seed=i), n=2) for i, p in enumerate(prompts)]
        loop = asyncio.get_running_loop()
        for job in jobs:
            job.loop = loop
        await asyncio.to_thread(engine._generate, jobs)
        out = []
        for job in jobs:
            got: dict[int, tuple[list[int], list[float]]] = {0: ([], []), 1: ([], [])}
            while not job.events.empty():
                event = job.events.get_nowait()
                if event[0] == "token":
                    got[event[1]][0].append(event[2])
                    got[event[1]][1].append(event[3])
            out.append(got)
        return out

    for prompt, got in zip(prompts, asyncio.run(run()), strict=True):
        for ids, lps in got.values():
            assert len(ids) >= 1
            assert_close(lps, forward_logprobs(base_model, prompt, ids))
