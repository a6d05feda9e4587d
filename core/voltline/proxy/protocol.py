"""Request validation and response shapes of the OpenAI API, with vLLM's token-id fields.

Responses add `prompt_token_ids` (top level) and `token_ids` (per choice), as vLLM does with
`return_token_ids`; logprobs are OpenAI's `logprobs.content[].logprob` (chat) or
`logprobs.token_logprobs` (completions). Unknown request fields are accepted and ignored, as
OpenAI-compatible servers do, so clients that send extras keep working.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .._ids import random_hex
from .errors import ProxyError

__all__ = ["ChatRequest", "CompletionRequest", "completion_id", "dtype_kwargs", "parse_request"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=16)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None

    @field_validator("temperature", "top_p", mode="before")
    @classmethod
    def _none_is_default(cls, value: Any, info: Any) -> Any:
        # Some clients send explicit nulls for "use the default".
        return {"temperature": 1.0, "top_p": 1.0}[info.field_name] if value is None else value

    @field_validator("n", mode="before")
    @classmethod
    def _n_default(cls, value: Any) -> Any:
        return 1 if value is None else value

    @property
    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else [s for s in self.stop if s]

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class ChatRequest(_Request):
    messages: list[Any] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    @property
    def limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Request):
    prompt: str | list[int] | list[str] | list[list[int]]
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: bool = False

    @property
    def limit(self) -> int | None:
        # OpenAI's default for /v1/completions is 16 tokens.
        return 16 if self.max_tokens is None else self.max_tokens

    @property
    def top_logprobs(self) -> int | None:
        return self.logprobs


def parse_request(raw: bytes, model: type[_Request]) -> tuple[Any, dict[str, Any]]:
    """Parse a request body into (validated request, the body as a dict), or raise a 400."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProxyError(400, f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ProxyError(400, "the request body must be a JSON object")
    try:
        return model.model_validate(data), data
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise ProxyError(400, f"{param}: {first['msg']}", param=param, code="invalid_value") from None


def completion_id(prefix: str = "chatcmpl") -> str:
    return f"{prefix}-{random_hex(12)}"


def now() -> int:
    return int(time.time())


def dtype_kwargs(dtype: Any) -> dict[str, Any]:
    """`from_pretrained`'s dtype keyword: `dtype` since transformers 4.56, `torch_dtype` before."""
    import transformers

    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}
