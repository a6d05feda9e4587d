"""Text side of the local backend: chat messages to prompt ids, tool calls out of text, and
streaming text that always adds up to `decode(token_ids)`."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from typing import Any

from .._ids import random_hex
from .errors import ProxyError

__all__ = [
    "IncrementalText",
    "cut_at_stop",
    "normalize_messages",
    "parse_tool_calls",
    "prompt_ids",
    "token_bytes",
]


def _byte_decoder() -> dict[str, int]:
    # GPT-2's byte-level alphabet: printable bytes map to themselves, the rest to U+0100 on.
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), 256)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


_BYTE_DECODER = _byte_decoder()


def _is_byte_level(tokenizer: Any) -> bool:
    # Only GPT-2-style byte-level vocabularies spell tokens in the byte alphabet; a
    # SentencePiece piece such as "<0x0A>" must not be read that way.
    cached = getattr(tokenizer, "_voltline_byte_level", None)
    if cached is None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        cached = backend is not None and "ByteLevel" in backend.to_str()[:200000]
        with contextlib.suppress(AttributeError):  # a tokenizer that refuses attributes: just recompute
            tokenizer._voltline_byte_level = cached
    return cached


def token_bytes(tokenizer: Any, token_id: int) -> list[int]:
    """The raw bytes of one token (OpenAI's `bytes` field), exact for byte-level BPE vocabularies
    where decoding a lone token would give U+FFFD for half a character."""
    piece = tokenizer.convert_ids_to_tokens(token_id)
    if (
        _is_byte_level(tokenizer)
        and isinstance(piece, str)
        and piece
        and all(ch in _BYTE_DECODER for ch in piece)
        and token_id not in tokenizer.all_special_ids
        and piece not in tokenizer.get_added_vocab()
    ):
        return [_BYTE_DECODER[ch] for ch in piece]
    return list(tokenizer.decode([token_id], clean_up_tokenization_spaces=False).encode())


TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"


def _content_text(content: Any) -> str | None:
    # OpenAI allows a list of parts; only text parts mean anything to a text model.
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                parts.append(part)
            else:
                raise ProxyError(400, "only text content parts are supported", param="messages")
        return "".join(parts)
    raise ProxyError(400, "message content must be a string or a list of parts", param="messages")


def normalize_messages(messages: Sequence[Any]) -> list[dict[str, Any]]:
    """Messages as the chat template expects them: string contents, tool-call arguments as JSON text."""
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ProxyError(400, f"messages[{i}] must be an object with a role", param="messages")
        m = dict(message)
        if m["role"] == "developer":  # newer OpenAI clients send this for system prompts
            m["role"] = "system"
        m["content"] = _content_text(m.get("content"))
        calls = []
        for call in m.get("tool_calls") or []:
            fn = dict(call.get("function") or {})
            args = fn.get("arguments", "{}")
            fn["arguments"] = args if isinstance(args, str) else json.dumps(args)
            calls.append({**call, "function": fn})
        if calls:
            m["tool_calls"] = calls
        out.append(m)
    if not out:
        raise ProxyError(400, "messages must not be empty", param="messages")
    return out


def prompt_ids(tokenizer: Any, messages: Sequence[Any], tools: list[dict[str, Any]] | None) -> list[int]:
    """Token ids of the rendered chat prompt, ending with the assistant's turn opening."""
    msgs = normalize_messages(messages)
    try:
        ids = tokenizer.apply_chat_template(
            msgs, tools=tools or None, add_generation_prompt=True, tokenize=True, return_dict=False
        )
    except ProxyError:
        raise
    except Exception as exc:  # a template error is the request's fault (odd roles, shapes)
        raise ProxyError(400, f"could not apply the chat template: {exc}", param="messages") from None
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return [int(i) for i in ids]


def parse_tool_calls(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Split generated text into its content and the `<tool_call>{json}</tool_call>` calls in it.
    A block that is not valid JSON with a name stays in the content: nothing is lost."""
    calls: list[dict[str, Any]] = []
    content: list[str] = []
    rest = text
    while TOOL_OPEN in rest:
        before, after = rest.split(TOOL_OPEN, 1)
        body, sep, tail = after.partition(TOOL_CLOSE)
        try:
            parsed = json.loads(body)
            name = parsed["name"]
            args = parsed.get("arguments", {})
            if not isinstance(name, str):
                raise TypeError(name)
        except (ValueError, KeyError, TypeError, AttributeError):
            content.append(before + TOOL_OPEN)
            rest = after
            continue
        content.append(before)
        calls.append(
            {
                "id": "call_" + random_hex(12),
                "type": "function",
                "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)},
            }
        )
        rest = tail if sep else ""
    content.append(rest)
    return "".join(content), calls


class IncrementalText:
    """Turns a growing list of token ids into text deltas whose sum is `decode(ids)` (cut at a stop).

    Byte-level tokens can split a character; a decode that ends in U+FFFD is held back until
    the next token completes it. Text from the first of `markers` on (a stop string, or
    `<tool_call>`, which becomes a structured call at the end) is never sent, and neither is a
    tail that could be the start of one.
    """

    def __init__(self, tokenizer: Any, markers: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.sent = ""
        self.markers = [m for m in markers if m]

    def text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        # Decoding everything each step is quadratic, but it is always exactly consistent
        # with the final decode, and answers from this backend are short.
        text = self.text()
        if text.endswith("\ufffd"):
            return ""
        safe = len(text)
        for marker in self.markers:
            at = text.find(marker)
            if at >= 0:
                safe = min(safe, at)
                continue
            for k in range(min(len(marker) - 1, len(text)), 0, -1):
                if marker.startswith(text[-k:]):
                    safe = min(safe, len(text) - k)
                    break
        if safe <= len(self.sent):
            return ""
        delta = text[len(self.sent) : safe]
        self.sent += delta
        return delta


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the first stop string (OpenAI semantics: the stop string is not returned)."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
