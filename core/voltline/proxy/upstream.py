"""The upstream backend: forward to any OpenAI-compatible server and make sure the answer has token ids.

vLLM is asked for them (`return_token_ids`, `logprobs`); its `prompt_token_ids` and per-choice
`token_ids` pass straight through. A server that returns none (OpenAI, llama.cpp, ...) gets
them computed with the model's tokenizer: the prompt through its chat template, the completion
text encoded; such spans say `voltline.token_ids_source: "retokenized"`, because re-encoding
text can differ from the tokens the model actually sampled.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from .chat import prompt_ids
from .errors import ProxyError
from .localserve import Result
from .protocol import ChatRequest, CompletionRequest
from .record import CallRecord, ChoiceRecord

__all__ = ["UpstreamBackend"]


class UpstreamBackend:
    kind = "upstream"

    def __init__(
        self,
        base_url: str,
        *,
        tokenizer: str | Path | None = None,
        model: str | None = None,
        name: str | None = None,
        api_key: str | None = None,
        timeout: float = 600.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model  # what to ask upstream for; None: the client's model name
        self.name = name
        key = api_key or os.environ.get("VOLTLINE_UPSTREAM_API_KEY")
        headers = {"authorization": f"Bearer {key}"} if key else {}
        # One pooled client: connection reuse is most of what keeps the added latency low.
        self.client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout,
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )
        self.tokenizer: Any = None
        if tokenizer is not None:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer)

    async def close(self) -> None:
        await self.client.aclose()

    async def models(self) -> list[str]:
        if self.name:
            return [self.name]
        resp = await self._send("GET", "/models", None)
        return [m["id"] for m in resp.json().get("data", [])]

    def _upstream_model(self, model: str) -> str:
        if self.name and model != self.name:
            raise ProxyError(
                404,
                f"The model `{model}` does not exist. This server serves `{self.name}`.",
                param="model",
                code="model_not_found",
            )
        return self.model or model

    async def _send(self, method: str, path: str, body: Any, stream: bool = False) -> httpx.Response:
        request = self.client.build_request(method, path, json=body)
        try:
            resp = await self.client.send(request, stream=stream)
        except httpx.HTTPError as exc:
            raise ProxyError(
                502, f"the upstream server at {self.base_url} failed: {exc}", type="upstream_error"
            ) from None
        if resp.status_code >= 400:
            raw = await resp.aread()
            await resp.aclose()
            raise _upstream_error(resp.status_code, raw)
        return resp

    # requests -----------------------------------------------------------------------------
    async def chat(self, req: ChatRequest, body: dict[str, Any]) -> Result:
        out = {**body, "model": self._upstream_model(req.model), "return_token_ids": True}
        if not out.get("logprobs"):
            out["logprobs"] = True
        rec = CallRecord(
            "chat", req.model, body.get("messages"), backend="upstream", token_ids_source="upstream"
        )
        return await self._call("/chat/completions", out, req, rec)

    async def completion(self, req: CompletionRequest, body: dict[str, Any]) -> Result:
        out = {**body, "model": self._upstream_model(req.model), "return_token_ids": True}
        if out.get("logprobs") is None:
            out["logprobs"] = 0  # the sampled token's logprob, no alternatives
        rec = CallRecord(
            "text_completion", req.model, body.get("prompt"), backend="upstream", token_ids_source="upstream"
        )
        return await self._call("/completions", out, req, rec)

    async def _call(self, path: str, out: dict[str, Any], req: Any, rec: CallRecord) -> Result:
        if not req.stream:
            data = (await self._send("POST", path, out)).json()
            data["model"] = req.model
            rec.response_id = data.get("id") or ""
            _absorb(rec, data)
            extra = self._fill_missing(rec, req)
            if extra is not None:
                data["prompt_token_ids"] = rec.prompt_token_ids
                for choice in data.get("choices", []):
                    choice["token_ids"] = rec.choice(choice.get("index", 0)).token_ids
            return Result(rec, response=data)
        resp = await self._send("POST", path, out, stream=True)
        return Result(rec, chunks=self._stream(resp, req, rec))

    async def _stream(self, resp: httpx.Response, req: Any, rec: CallRecord) -> AsyncIterator[dict[str, Any]]:
        head: dict[str, Any] = {}
        try:
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                chunk = json.loads(payload)
                if "error" in chunk and "choices" not in chunk:
                    raise ProxyError(
                        502, str(chunk["error"].get("message", chunk["error"])), type="upstream_error"
                    )
                chunk["model"] = req.model
                rec.response_id = rec.response_id or chunk.get("id") or ""
                head = head or {k: chunk[k] for k in ("id", "object", "created", "model") if k in chunk}
                _absorb(rec, chunk, streaming=True)
                yield chunk
        finally:
            await resp.aclose()
        if self._fill_missing(rec, req) is not None:
            # The ids were not in the stream: send them in one last chunk, still before [DONE].
            choices = []
            for index, ch in sorted(rec.choices.items()):
                body = {"delta": {}} if rec.operation == "chat" else {"text": ""}
                choices.append({"index": index, **body, "finish_reason": None, "token_ids": ch.token_ids})
            yield {**head, "choices": choices, "prompt_token_ids": rec.prompt_token_ids}

    def _fill_missing(self, rec: CallRecord, req: Any) -> bool | None:
        """Compute token ids the upstream did not return; None when nothing was missing."""
        missing = rec.prompt_token_ids is None or any(not ch.token_ids for ch in rec.choices.values())
        if not missing:
            return None
        if self.tokenizer is None:
            rec.token_ids_source = "unavailable"
            return None
        rec.token_ids_source = "retokenized"
        if rec.prompt_token_ids is None:
            if rec.operation == "chat":
                rec.prompt_token_ids = prompt_ids(self.tokenizer, req.messages, req.tools)
            else:
                prompt = (
                    req.prompt[0]
                    if isinstance(req.prompt, list) and req.prompt and isinstance(req.prompt[0], str | list)
                    else req.prompt
                )
                rec.prompt_token_ids = (
                    list(prompt)
                    if isinstance(prompt, list)
                    else self.tokenizer.encode(prompt, add_special_tokens=False)
                )
        for ch in rec.choices.values():
            if not ch.token_ids:
                ch.token_ids = self.tokenizer.encode(ch.text, add_special_tokens=False)
                if ch.logprobs is not None and len(ch.logprobs) != len(ch.token_ids):
                    ch.logprobs = None  # they belong to other tokens; wrong logprobs are worse than none
        return True


def _absorb(rec: CallRecord, data: dict[str, Any], streaming: bool = False) -> None:
    """Fold a response (or one stream chunk) into the record: ids, logprobs, text, tool calls."""
    if data.get("prompt_token_ids") and rec.prompt_token_ids is None:
        rec.prompt_token_ids = list(data["prompt_token_ids"])
    for choice in data.get("choices") or []:
        ch: ChoiceRecord = rec.choice(choice.get("index", 0))
        if choice.get("prompt_token_ids") and rec.prompt_token_ids is None:  # vLLM /v1/completions
            rec.prompt_token_ids = list(choice["prompt_token_ids"])
        ch.token_ids += choice.get("token_ids") or []
        lp = choice.get("logprobs") or {}
        if ch.logprobs is not None:
            if lp.get("content"):
                ch.logprobs += [t["logprob"] for t in lp["content"]]
            elif lp.get("token_logprobs"):
                ch.logprobs += list(lp["token_logprobs"])
        message = choice.get("delta" if streaming else "message")
        if message is not None:
            ch.text += message.get("content") or ""
            for call in message.get("tool_calls") or []:
                _merge_tool_call(ch.tool_calls, call, streaming)
        elif "text" in choice:
            ch.text += choice.get("text") or ""
        ch.finish_reason = choice.get("finish_reason") or ch.finish_reason


def _merge_tool_call(calls: list[dict[str, Any]], call: dict[str, Any], streaming: bool) -> None:
    if not streaming:
        calls.append(call)
        return
    index = call.get("index", len(calls))
    while len(calls) <= index:
        calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
    target = calls[index]
    target["id"] = call.get("id") or target["id"]
    fn = call.get("function") or {}
    target["function"]["name"] += fn.get("name") or ""
    target["function"]["arguments"] += fn.get("arguments") or ""


def _upstream_error(status: int, raw: bytes) -> ProxyError:
    """The upstream's error, passed on with its status (OpenAI-shaped when it was not)."""
    try:
        err = json.loads(raw)["error"]
        if isinstance(err, dict):
            return ProxyError(
                status,
                str(err.get("message")),
                param=err.get("param"),
                code=err.get("code"),
                type=err.get("type"),
            )
        return ProxyError(status, str(err))
    except (ValueError, KeyError, TypeError):
        return ProxyError(status, f"upstream error: {raw[:500].decode(errors='replace')}")
