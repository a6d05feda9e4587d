"""What classic-AutoGen (ag2) capture costs the agents: a two-agent chat with and without it.

    VOLTLINE_PLUGINS=ag2 .venv/bin/python benchmarks/ag2_capture.py [--runs 200]

One process, rounds alternating uninstrumented and instrumented so machine noise hits both
alike. The chat is the one the tests use: a user proxy and an assistant on a custom model
client (`register_model_client`) replaying scripted completions, one `add` tool call, two
model calls: 11 spans per chat (chat, 4 messages, 3 turns, 2 llm, 1 tool).
Agents are built inside each timed chat, so the `__init__` wrapper's cost is included. The
instrumented side runs inside one `voltline.rollout` on a SQLite file; the writer thread
shares the GIL, so its work partly lands in the chat's time. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from autogen import ConversableAgent, register_function
from autogen.io import IOStream
from openai.types.chat import ChatCompletion

import voltline


class Quiet:
    def print(self, *objects: Any, sep: str = " ", end: str = "\n", flush: bool = False) -> None:
        pass

    def send(self, message: Any) -> None:
        pass

    def input(self, prompt: str = "", *, password: bool = False) -> str:
        return ""


class Scripted:
    """Replays: a call to add(2, 3), then the answer."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.n = 0

    def create(self, params: dict[str, Any]) -> ChatCompletion:
        self.n += 1
        if self.n == 1:
            function = {"name": "add", "arguments": json.dumps({"a": 2, "b": 3})}
            message = {
                "role": "assistant",
                "tool_calls": [{"id": "c1", "type": "function", "function": function}],
            }
        else:
            message = {"role": "assistant", "content": "5. TERMINATE"}
        return ChatCompletion.model_validate(
            {
                "id": f"cmpl-{self.n}",
                "object": "chat.completion",
                "created": 0,
                "model": "scripted",
                "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
            }
        )

    def message_retrieval(self, response: ChatCompletion) -> list[Any]:
        return [c.message for c in response.choices]

    def cost(self, response: ChatCompletion) -> float:
        return 0.0

    @staticmethod
    def get_usage(response: ChatCompletion) -> dict[str, Any]:
        return {
            "prompt_tokens": 10,
            "completion_tokens": 2,
            "total_tokens": 12,
            "cost": 0.0,
            "model": "scripted",
        }


def add(a: int, b: int) -> int:
    return a + b


def chat() -> None:
    done = lambda m: "TERMINATE" in (m.get("content") or "")  # noqa: E731
    config = {"config_list": [{"model": "scripted", "model_client_cls": "Scripted"}], "cache_seed": None}
    user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER", is_termination_msg=done)
    assistant = ConversableAgent(
        "assistant", llm_config=config, human_input_mode="NEVER", is_termination_msg=done
    )
    register_function(add, caller=assistant, executor=user, description="Add two integers.")
    assistant.register_model_client(Scripted)
    user.initiate_chat(assistant, message="What is 2 + 3?", max_turns=3, silent=True)


def timed(fn: Callable[[], object], n: int, cpu: list[float]) -> list[float]:
    """Wall time per call; the calling thread's CPU time per call is appended to `cpu`.

    Thread CPU time leaves out the writer thread and other processes, so it shows the capture
    code's own cost on the agent's thread even on a loaded machine.
    """
    out = []
    for _ in range(n):
        c = time.thread_time()
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
        cpu.append(time.thread_time() - c)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="chats per side (default: %(default)s)")
    args = parser.parse_args()
    logging.getLogger("autogen.oai.client").setLevel(logging.WARNING)
    rounds = 20
    with tempfile.TemporaryDirectory() as tmp, IOStream.set_default(Quiet()):
        store = voltline.connect(f"sqlite:///{tmp}/bench.db")
        for _ in range(20):  # warm up imports, caches, the writer thread
            chat()
        base: list[float] = []
        inst: list[float] = []
        deltas: list[float] = []  # per round: median captured - median uncaptured (robust to drift)
        base_cpu: list[float] = []
        inst_cpu: list[float] = []
        with voltline.rollout("bench", store=store) as r:
            gc.disable()
            for _ in range(rounds):
                b = timed(chat, args.runs // rounds, base_cpu)
                assert voltline.instrument() == ["ag2"], "set VOLTLINE_PLUGINS=ag2"
                i = timed(chat, args.runs // rounds, inst_cpu)
                voltline.uninstrument()
                base += b
                inst += i
                deltas.append(statistics.median(i) - statistics.median(b))
            gc.enable()
        voltline.flush()
        per_chat = len(store.query_spans(rollout_id=r.rollout_id)) / len(inst)
        store.close()

    def ms(xs: list[float]) -> str:
        p90 = statistics.quantiles(xs, n=10)[-1]
        return f"median {statistics.median(xs) * 1e3:.2f} ms  p90 {p90 * 1e3:.2f} ms"

    extra = statistics.median(deltas)
    print(f"python {platform.python_version()} on {platform.machine()}, {len(inst)} chats per side")
    print(f"two-agent chat, no capture : {ms(base)}")
    print(f"two-agent chat, captured   : {ms(inst)}  ({per_chat:.0f} spans per chat)")
    share = extra / statistics.median(base)
    print(
        f"  capture cost per chat    : {extra * 1e3:.2f} ms = {share:.0%} (median of per-round differences)"
    )
    print(f"  per recorded span        : {extra / per_chat * 1e6:.0f} µs")
    cpu_base, cpu_inst = statistics.median(base_cpu), statistics.median(inst_cpu)
    cpu = cpu_inst - cpu_base
    print(
        f"agent-thread CPU per chat  : {cpu_base * 1e3:.2f} ms -> {cpu_inst * 1e3:.2f} ms, "
        f"+{cpu * 1e3:.2f} ms = +{cpu / cpu_base:.0%} ({cpu / per_chat * 1e6:.0f} µs per span)"
    )


if __name__ == "__main__":
    main()
