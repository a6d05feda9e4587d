"""OpenAI responses from the local engine: chat and text completions, whole or streamed."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .chat import IncrementalText, cut_at_stop, parse_tool_calls, prompt_ids, token_bytes
from .errors import ProxyError
from .local import GenJob, LocalEngine, Sampling
from .protocol import ChatRequest, CompletionRequest, completion_id, now
from .record import CallRecord

__all__ = ["LocalBackend", "Result"]

TOOL_OPEN = "<tool_call>"
PROMPT_CACHE_SIZE = 1024  # rendered prompts kept; a GRPO group sends one prompt several times


class _Coalesced:
    """Shares one store read among requests that arrive together, without serving stale data.

    A request joins the next read that has not started yet, so every caller gets a value read
    after it arrived (a version published before a request comes in is what it sees), while a
    burst of concurrent requests costs one or two reads instead of one each.
    """

    def __init__(self, fetch: Callable[[], Any]) -> None:
        self._fetch = fetch
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next: asyncio.Future[Any] | None = None
        self._reading = False
        self._task: asyncio.Task[None] | None = None

    async def get(self) -> Any:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (the app restarted): start afresh
            self._loop, self._next, self._reading, self._task = loop, None, False, None
        if self._next is None:
            self._next = loop.create_future()
        future = self._next
        if not self._reading:
            self._reading = True
            self._task = loop.create_task(self._read())
        # shield: one caller's cancellation must not cancel the read the others wait on.
        return await asyncio.shield(future)

    async def _read(self) -> None:
        try:
            while self._next is not None:
                future, self._next = self._next, None
                try:
                    future.set_result(await asyncio.to_thread(self._fetch))
                except Exception as exc:
                    future.set_exception(exc)
                    future.exception()  # retrieved here too: no warning if every waiter left
        finally:
            self._reading = False


@dataclass
class Result:
    """A backend's answer: a whole response, or chunks to stream. `record` is complete once
    the response is built or the last chunk has been yielded."""

    record: CallRecord
    response: dict[str, Any] | None = None
    chunks: AsyncIterator[dict[str, Any]] | None = None


class LocalBackend:
    """Serves one model directory; `model` names the base (`NAME:base`), an adapter version
    (`NAME:3`) or, plainly `NAME`, the latest adapter version (the base while there is none)."""

    kind = "local"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        name: str | None = None,
        store: Any = None,
        adapter: str | None = None,
        default_max_tokens: int = 256,
        max_batch: int = 16,
        device: str | None = None,
    ) -> None:
        self.name = name or Path(model_dir).resolve().name
        self.store = store
        self.adapter = adapter
        self.default_max_tokens = default_max_tokens
        fetch = self._fetch_adapter if (store is not None and adapter) else None
        self.engine = LocalEngine(model_dir, device=device, max_batch=max_batch, fetch_adapter=fetch)
        self.tokenizer = self.engine.tokenizer
        self._token_text: dict[int, str] = {}
        self._token_bytes: dict[int, list[int]] = {}
        self._latest = _Coalesced(self._latest_adapter)
        self._known_versions: set[int] = set()  # versions seen in the store (they never go away)
        self._prompts: OrderedDict[bytes, list[int]] = OrderedDict()

    def close(self) -> None:
        self.engine.close()

    # models and adapters -----------------------------------------------------------------
    def _fetch_adapter(self, version: int) -> bytes:
        rv = self.store.get_resource(self.adapter, version)
        if rv.artifact_hash is None:
            raise ProxyError(400, f"{self.adapter!r} version {version} has no artifact")
        return self.store.get_artifact(rv.artifact_hash)

    def _latest_adapter(self) -> int | None:
        from .._errors import NotFound

        try:
            return self.store.get_resource(self.adapter).version
        except NotFound:
            return None

    async def resolve(self, model: str) -> int | None:
        """The adapter version `model` asks for (None: the base model), or a 404."""
        base, _, suffix = model.partition(":")
        if base != self.name:
            raise ProxyError(
                404,
                f"The model `{model}` does not exist. This server serves `{self.name}`.",
                param="model",
                code="model_not_found",
            )
        has_adapters = self.store is not None and self.adapter is not None
        if suffix == "base" or (not suffix and not has_adapters):
            return None
        if not suffix:  # latest: read after the request arrived, so a new version is used at once
            return await self._latest.get()
        if not suffix.isdigit() or not has_adapters:
            raise ProxyError(
                404, f"The model `{model}` does not exist.", param="model", code="model_not_found"
            )
        if int(suffix) in self._known_versions:
            return int(suffix)
        from .._errors import NotFound

        try:
            await asyncio.to_thread(self.store.get_resource, self.adapter, int(suffix))
        except NotFound:
            raise ProxyError(
                404,
                f"The model `{model}` does not exist: no version {suffix} of adapter {self.adapter!r}.",
                param="model",
                code="model_not_found",
            ) from None
        self._known_versions.add(int(suffix))
        return int(suffix)

    async def models(self) -> list[str]:
        names = [self.name, f"{self.name}:base"]
        if self.store is not None and self.adapter:
            from .._errors import NotFound

            try:
                history = await asyncio.to_thread(self.store.resource_history, self.adapter)
            except NotFound:
                history = []
            names += [f"{self.name}:{rv.version}" for rv in history]
        return names

    # helpers -------------------------------------------------------------------------------
    def _chat_prompt_ids(self, messages: list[Any], tools: list[dict[str, Any]] | None) -> list[int]:
        """`prompt_ids`, cached by the request's messages and tools: rendering the chat template
        costs more than the rest of a short request, and a GRPO group repeats one prompt."""
        try:
            key = orjson.dumps([messages, tools])
        except TypeError:  # not JSON after all (only possible when called directly): no caching
            return prompt_ids(self.tokenizer, messages, tools)
        ids = self._prompts.get(key)
        if ids is None:
            ids = prompt_ids(self.tokenizer, messages, tools)
            self._prompts[key] = ids
            if len(self._prompts) > PROMPT_CACHE_SIZE:
                self._prompts.popitem(last=False)
        else:
            self._prompts.move_to_end(key)
        return list(ids)  # callers keep the list (records, jobs): never share the cached one

    def _budget(self, prompt_len: int, limit: int | None) -> int:
        room = self.engine.context_length - prompt_len
        if room <= 0 or (limit is not None and limit > room):
            asked = limit or 1
            raise ProxyError(
                400,
                f"This model's maximum context length is {self.engine.context_length} "
                f"tokens. However, you requested {prompt_len + asked} tokens ({prompt_len} in "
                f"the messages, {asked} in the completion).",
                param="messages",
                code="context_length_exceeded",
            )
        return limit if limit is not None else min(self.default_max_tokens, room)

    def _text(self, token_id: int) -> str:
        text = self._token_text.get(token_id)
        if text is None:
            text = self._token_text[token_id] = self.tokenizer.decode([token_id])
        return text

    def _bytes(self, token_id: int) -> list[int]:
        raw = self._token_bytes.get(token_id)
        if raw is None:
            raw = self._token_bytes[token_id] = token_bytes(self.tokenizer, token_id)
        return raw

    def _chat_logprob(self, tok: int, lp: float, top: Any) -> dict[str, Any]:
        return {
            "token": self._text(tok),
            "logprob": lp,
            "bytes": self._bytes(tok),
            "top_logprobs": [
                {"token": self._text(t), "logprob": v, "bytes": self._bytes(t)} for t, v in top or []
            ],
        }

    async def _start(self, ids: list[int], req: Any, variant: int | None, top: int) -> GenJob:
        stops = req.stops
        decode = self.tokenizer.decode

        def stop_check(out: list[int]) -> bool:  # runs on the engine thread
            tail = decode(out[-32:], skip_special_tokens=True, clean_up_tokenization_spaces=False)
            return any(s in tail for s in stops)

        sampling = Sampling(self._budget(len(ids), req.limit), req.temperature, req.top_p, req.seed, top)
        job = GenJob(ids, sampling, n=req.n, variant=variant, stop_check=stop_check if stops else None)
        return self.engine.submit(job)

    def _record(self, operation: str, req: Any, ids: list[int], variant: int | None, rid: str) -> CallRecord:
        rec = CallRecord(
            operation,
            req.model,
            getattr(req, "messages", None) or getattr(req, "prompt", None),
            response_id=rid,
            prompt_token_ids=ids,
            backend="local",
        )
        if variant is not None and self.adapter:
            rec.resources[self.adapter] = variant
        return rec

    def _finish_text(
        self, text: str, stops: list[str], tools: bool
    ) -> tuple[str, list[dict[str, Any]], bool]:
        text, stopped = cut_at_stop(text, stops)
        calls: list[dict[str, Any]] = []
        if tools:
            text, calls = parse_tool_calls(text)
        return text, calls, stopped

    @staticmethod
    async def _events(job: GenJob) -> AsyncIterator[tuple[Any, ...]]:
        left = job.n
        try:
            while left:
                event = await job.events.get()
                if event[0] == "error":
                    raise (
                        event[1]
                        if isinstance(event[1], ProxyError)
                        else ProxyError(500, f"generation failed: {event[1]}")
                    )
                if event[0] == "done":
                    left -= 1
                yield event
        finally:
            job.cancelled = True  # the client went away, or we are done: free the batch row

    # chat ----------------------------------------------------------------------------------
    async def chat(self, req: ChatRequest, body: dict[str, Any] | None = None) -> Result:
        variant = await self.resolve(req.model)
        ids = self._chat_prompt_ids(req.messages, req.tools)
        top = (req.top_logprobs or 0) if req.logprobs else 0
        rid = completion_id("chatcmpl")
        rec = self._record("chat", req, ids, variant, rid)
        job = await self._start(ids, req, variant, top)
        if req.stream:
            return Result(rec, chunks=self._chat_stream(job, req, rec))
        return Result(rec, response=await self._chat_whole(job, req, rec))

    async def _chat_whole(self, job: GenJob, req: ChatRequest, rec: CallRecord) -> dict[str, Any]:
        content: dict[int, list[dict[str, Any]]] = {c: [] for c in range(req.n)}
        async for event in self._events(job):
            if event[0] == "token":
                _, c, tok, lp, top = event
                ch = rec.choice(c)
                ch.token_ids.append(tok)
                ch.logprobs.append(lp)
                content[c].append(self._chat_logprob(tok, lp, top))
            else:
                rec.choice(event[1]).finish_reason = event[2]
        choices = []
        for c in range(req.n):
            ch = rec.choice(c)
            full = self.tokenizer.decode(
                ch.token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
            text, calls, _ = self._finish_text(full, req.stops, bool(req.tools))
            ch.text, ch.tool_calls = text, calls
            if calls:
                ch.finish_reason = "tool_calls"
            message: dict[str, Any] = {"role": "assistant", "content": text if (text or not calls) else None}
            if calls:
                message["tool_calls"] = calls
            choices.append(
                {
                    "index": c,
                    "message": message,
                    "logprobs": {"content": content[c]},
                    "finish_reason": ch.finish_reason,
                    "token_ids": ch.token_ids,
                }
            )
        return {
            "id": rec.response_id,
            "object": "chat.completion",
            "created": now(),
            "model": req.model,
            "choices": choices,
            "usage": _usage(rec),
            "prompt_token_ids": rec.prompt_token_ids,
        }

    async def _chat_stream(
        self, job: GenJob, req: ChatRequest, rec: CallRecord
    ) -> AsyncIterator[dict[str, Any]]:
        created = now()
        head = {
            "id": rec.response_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": req.model,
        }
        markers = list(req.stops) + ([TOOL_OPEN] if req.tools else [])
        texts = {c: IncrementalText(self.tokenizer, markers) for c in range(req.n)}
        for c in range(req.n):
            first = {
                "index": c,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
            yield {**head, "choices": [first], "prompt_token_ids": rec.prompt_token_ids}
        async for event in self._events(job):
            if event[0] == "token":
                _, c, tok, lp, top = event
                ch = rec.choice(c)
                ch.token_ids.append(tok)
                ch.logprobs.append(lp)
                delta = texts[c].add(tok)
                yield {
                    **head,
                    "choices": [
                        {
                            "index": c,
                            "delta": {"content": delta},
                            "logprobs": {"content": [self._chat_logprob(tok, lp, top)]},
                            "finish_reason": None,
                            "token_ids": [tok],
                        }
                    ],
                }
                continue
            _, c, finish = event
            ch = rec.choice(c)
            text, calls, _ = self._finish_text(texts[c].text(), req.stops, bool(req.tools))
            ch.text, ch.tool_calls, ch.finish_reason = text, calls, ("tool_calls" if calls else finish)
            sent = texts[c].sent
            rest = text[len(sent) :] if text.startswith(sent) else ""
            delta: dict[str, Any] = {"content": rest} if rest else {}
            if calls:
                delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(calls)]
            if delta:
                yield {
                    **head,
                    "choices": [
                        {"index": c, "delta": delta, "logprobs": None, "finish_reason": None, "token_ids": []}
                    ],
                }
            yield {
                **head,
                "choices": [
                    {
                        "index": c,
                        "delta": {},
                        "logprobs": None,
                        "finish_reason": ch.finish_reason,
                        "token_ids": [],
                    }
                ],
            }
        if req.include_usage:
            yield {**head, "choices": [], "usage": _usage(rec)}

    # text completions -------------------------------------------------------------------------
    def _prompt_ids(self, prompt: Any) -> list[int]:
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
            prompt = prompt[0]
        if isinstance(prompt, str):
            return list(self.tokenizer.encode(prompt, add_special_tokens=False))
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            size = len(self.tokenizer)
            if any(t < 0 or t >= size for t in prompt):
                raise ProxyError(400, f"prompt token ids must be in [0, {size})", param="prompt")
            return list(prompt)
        raise ProxyError(400, "prompt must be one string or one list of token ids", param="prompt")

    async def completion(self, req: CompletionRequest, body: dict[str, Any] | None = None) -> Result:
        variant = await self.resolve(req.model)
        ids = self._prompt_ids(req.prompt)
        if not ids:
            raise ProxyError(400, "prompt must not be empty", param="prompt")
        rid = completion_id("cmpl")
        rec = self._record("text_completion", req, ids, variant, rid)
        job = await self._start(ids, req, variant, req.logprobs or 0)
        if req.stream:
            return Result(rec, chunks=self._completion_stream(job, req, rec))
        return Result(rec, response=await self._completion_whole(job, req, rec))

    def _text_logprobs(self, toks: list[int], lps: list[float], tops: list[Any]) -> dict[str, Any]:
        texts = [self._text(t) for t in toks]
        offsets, at = [], 0
        for t in texts:
            offsets.append(at)
            at += len(t)
        top = [{self._text(i): v for i, v in top} if top else None for top in tops]
        return {
            "tokens": texts,
            "token_logprobs": lps,
            "top_logprobs": top if any(tops) else None,
            "text_offset": offsets,
        }

    async def _completion_whole(self, job: GenJob, req: CompletionRequest, rec: CallRecord) -> dict[str, Any]:
        tops: dict[int, list[Any]] = {c: [] for c in range(req.n)}
        async for event in self._events(job):
            if event[0] == "token":
                _, c, tok, lp, top = event
                rec.choice(c).token_ids.append(tok)
                rec.choice(c).logprobs.append(lp)
                tops[c].append(top)
            else:
                rec.choice(event[1]).finish_reason = event[2]
        choices = []
        for c in range(req.n):
            ch = rec.choice(c)
            ch.text, _ = cut_at_stop(
                self.tokenizer.decode(
                    ch.token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
                ),
                req.stops,
            )
            choices.append(
                {
                    "index": c,
                    "text": ch.text,
                    "finish_reason": ch.finish_reason,
                    "logprobs": self._text_logprobs(ch.token_ids, ch.logprobs, tops[c]),
                    "token_ids": ch.token_ids,
                    "prompt_token_ids": rec.prompt_token_ids,
                }
            )
        return {
            "id": rec.response_id,
            "object": "text_completion",
            "created": now(),
            "model": req.model,
            "choices": choices,
            "usage": _usage(rec),
            "prompt_token_ids": rec.prompt_token_ids,
        }

    async def _completion_stream(
        self, job: GenJob, req: CompletionRequest, rec: CallRecord
    ) -> AsyncIterator[dict[str, Any]]:
        head = {"id": rec.response_id, "object": "text_completion", "created": now(), "model": req.model}
        texts = {c: IncrementalText(self.tokenizer, req.stops) for c in range(req.n)}
        first = True
        async for event in self._events(job):
            if event[0] == "token":
                _, c, tok, lp, top = event
                ch = rec.choice(c)
                ch.token_ids.append(tok)
                ch.logprobs.append(lp)
                choice = {
                    "index": c,
                    "text": texts[c].add(tok),
                    "finish_reason": None,
                    "token_ids": [tok],
                    "logprobs": self._text_logprobs([tok], [lp], [top]),
                }
                extra = {"prompt_token_ids": rec.prompt_token_ids} if first else {}
                first = False
                yield {**head, "choices": [choice], **extra}
                continue
            _, c, finish = event
            ch = rec.choice(c)
            ch.text, _ = cut_at_stop(texts[c].text(), req.stops)
            ch.finish_reason = finish
            sent = texts[c].sent
            rest = ch.text[len(sent) :] if ch.text.startswith(sent) else ""
            yield {
                **head,
                "choices": [
                    {"index": c, "text": rest, "finish_reason": finish, "token_ids": [], "logprobs": None}
                ],
            }
        if req.include_usage:
            yield {**head, "choices": [], "usage": _usage(rec)}


def _usage(rec: CallRecord) -> dict[str, int]:
    prompt = len(rec.prompt_token_ids or [])
    completion = sum(len(ch.token_ids) for ch in rec.choices.values())
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
