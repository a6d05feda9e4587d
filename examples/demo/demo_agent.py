"""The demo's agent: a LangChain `ChatOpenAI` agent that adds two numbers, captured with no code.

Nothing here mentions spans except the reward: `voltline.instrument()` (the voltline-langchain
plugin) records the LangChain call, and the Voltline proxy the model is reached through records
the exact token ids GRPO trains on; the two are joined on the completion id. The agent is a
top-level function in its own module so runner processes can import it by name.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import voltline

__all__ = ["PROXY_ENV", "adder_agent", "instrument_once"]

# The proxy's root URL reaches runner processes through the environment they inherit.
PROXY_ENV = "VOLTLINE_DEMO_PROXY_URL"
MODEL_NAME = "adder"

_lock = threading.Lock()
_state: dict[str, Any] = {}


def instrument_once() -> None:
    """Install the LangChain integration once per process (runner processes start bare)."""
    with _lock:
        if _state.get("instrumented"):
            return
        # Only the plugin this agent needs: loading every installed framework costs seconds.
        os.environ.setdefault("VOLTLINE_PLUGINS", "langchain")
        voltline.instrument()
        _state["instrumented"] = True


def _http_clients() -> tuple[Any, Any]:
    """One pooled HTTP client per process: a new connection per rollout would dominate its cost.

    The async client is never used (the agent calls `invoke`), but ChatOpenAI builds one per
    base URL unless given one, and each build loads the CA bundle: ~30 ms of CPU per rollout.
    """
    with _lock:
        if "http" not in _state:
            import httpx

            _state["http"] = (httpx.Client(timeout=60.0), httpx.AsyncClient(timeout=60.0))
        return _state["http"]


def adder_agent(task: dict[str, int], resources: dict[str, voltline.ResourceVersion]) -> str:
    """Ask the model for `a+b=`; reward 1.0 for the exact sum, else 0.0."""
    from langchain_core.messages import HumanMessage
    from langchain_openai import ChatOpenAI

    instrument_once()
    ctx = voltline.current_rollout()
    # The per-attempt URL tells the proxy which rollout the call belongs to; the model name
    # "adder" means "the latest published adapter version", so every step uses the newest policy.
    base_url = f"{os.environ[PROXY_ENV]}/rollout/{ctx.rollout_id}/attempt/{ctx.attempt_id}/v1"
    http, http_async = _http_clients()
    llm = ChatOpenAI(
        model=MODEL_NAME, base_url=base_url, api_key="unused", max_tokens=4, temperature=1.0,
        max_retries=0, http_client=http, http_async_client=http_async,
    )  # fmt: skip
    answer = str(llm.invoke([HumanMessage(f"{task['a']}+{task['b']}=")]).content).strip()
    voltline.emit_reward(1.0 if answer == str(task["a"] + task["b"]) else 0.0)
    return answer
