"""Classic AutoGen (ag2) agents captured by Voltline with no emit calls. Runs offline.

Two rollouts: a two-agent chat in which the assistant calls a `multiply` tool that the user
proxy executes, and a three-agent GroupChat (user, solver, reviewer). The "model" is a
custom ag2 model client (`register_model_client`) that answers by rule, so no weights and
no network are needed; point `config_list` at Voltline's proxy or any OpenAI-compatible
server instead and nothing else changes. The script prints each rollout's span tree.
Try afterwards:

    voltline rollouts list --url sqlite:///voltline-ag2.db
    voltline spans tree <rollout id> --url sqlite:///voltline-ag2.db
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from typing import Any

from autogen import ConversableAgent, GroupChat, GroupChatManager, register_function
from autogen.io import IOStream
from openai.types.chat import ChatCompletion

import voltline


class QuietIO:
    """An ag2 IOStream that prints nothing, so the span trees are the script's only output."""

    def print(self, *objects: Any, sep: str = " ", end: str = "\n", flush: bool = False) -> None:
        pass

    def send(self, message: Any) -> None:
        pass

    def input(self, prompt: str = "", *, password: bool = False) -> str:
        return ""


class RuleModelClient:
    """An ag2 ModelClient standing in for an LLM: asks for `multiply`, then reports its result.

    A reviewer (system message starting "You are the reviewer") approves the last answer instead. Agents
    whose system message mentions TERMINATE end their answer with it.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.calls = 0

    def create(self, params: dict[str, Any]) -> ChatCompletion:
        self.calls += 1
        messages = params["messages"]
        last = messages[-1]
        message: dict[str, Any] = {"role": "assistant", "content": None}
        system = messages[0].get("content") or ""
        done = " TERMINATE" if "TERMINATE" in system else ""
        if system.startswith("You are the reviewer"):
            message["content"] = "Checked the product: correct." + done
        elif last.get("role") == "tool":
            message["content"] = f"The product is {last['content']}." + done
        else:
            a, b = map(int, re.findall(r"\d+", str(last.get("content")))[:2])
            arguments = json.dumps({"a": a, "b": b})
            message["tool_calls"] = [
                {
                    "id": f"call_{self.calls}",
                    "type": "function",
                    "function": {"name": "multiply", "arguments": arguments},
                }
            ]
        return ChatCompletion.model_validate(
            {
                "id": f"cmpl-{id(self)}-{self.calls}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": params.get("model", "scripted-math"),
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": sum(len(str(m.get("content"))) for m in messages),
                    "completion_tokens": 8,
                    "total_tokens": 0,
                },
            }
        )

    def message_retrieval(self, response: ChatCompletion) -> list[Any]:
        return [choice.message for choice in response.choices]

    def cost(self, response: ChatCompletion) -> float:
        return 0.0

    @staticmethod
    def get_usage(response: ChatCompletion) -> dict[str, Any]:
        usage = response.usage
        return {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "cost": 0.0,
            "model": response.model,
        }


LLM_CONFIG = {
    "config_list": [{"model": "scripted-math", "model_client_cls": "RuleModelClient"}],
    "cache_seed": None,
}


def multiply(a: int, b: int) -> int:
    return a * b


def finished(message: dict[str, Any]) -> bool:
    return "TERMINATE" in (message.get("content") or "")


def llm_agent(
    name: str, system_message: str, tool_runner: ConversableAgent | None = None
) -> ConversableAgent:
    agent = ConversableAgent(
        name,
        system_message=system_message,
        llm_config=LLM_CONFIG,
        human_input_mode="NEVER",
        is_termination_msg=finished,
    )
    if tool_runner is not None:  # before register_model_client: offering a tool rebuilds the client
        register_function(multiply, caller=agent, executor=tool_runner, description="Multiply two integers.")
    agent.register_model_client(RuleModelClient)
    return agent


def user_proxy() -> ConversableAgent:
    return ConversableAgent("user", llm_config=False, human_input_mode="NEVER", is_termination_msg=finished)


def two_agent_chat(question: str) -> str:
    user = user_proxy()
    assistant = llm_agent(
        "assistant", "You multiply with the multiply tool, then say TERMINATE.", tool_runner=user
    )
    result = user.initiate_chat(assistant, message=question, max_turns=3, silent=True)
    return result.chat_history[-1]["content"]


def group_chat(question: str) -> str:
    user = user_proxy()
    reviewer = llm_agent("reviewer", "You are the reviewer: check the solver's answer, then say TERMINATE.")
    solver = llm_agent(
        "solver", "You multiply with the multiply tool; the reviewer checks it.", tool_runner=reviewer
    )
    order = iter([solver, reviewer, solver, reviewer])  # ask, run the tool, answer, approve
    chat = GroupChat(
        [user, solver, reviewer],
        messages=[],
        max_round=6,
        speaker_selection_method=lambda last, group: next(order),
    )
    manager = GroupChatManager(chat, llm_config=False, is_termination_msg=finished, silent=True)
    user.initiate_chat(manager, message=question, silent=True)
    return chat.messages[-2]["content"]  # the solver's answer, before the review


def print_tree(store: voltline.Store, rollout_id: str) -> None:
    spans = store.query_spans(rollout_id=rollout_id)
    children: dict[str | None, list[voltline.Span]] = {}
    for span in sorted(spans, key=lambda s: (s.start_time, s.sequence)):
        children.setdefault(span.parent_id, []).append(span)

    def show(parent: str | None, depth: int) -> None:
        for span in children.get(parent, []):
            detail = ""
            if span.kind == "tool":
                attrs = span.attributes
                detail = (
                    f"  {attrs.get('gen_ai.tool.call.arguments')} -> {attrs.get('gen_ai.tool.call.result')}"
                )
            elif span.kind == "reward":
                detail = f"  {span.attributes['reward.value']}"
            print(f"{'  ' * depth}{span.kind} {span.name}  [{span.agent_name or '-'}]{detail}")
            show(span.span_id, depth + 1)

    print(f"rollout {rollout_id}: {len(spans)} spans")
    show(None, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store", default="sqlite:///voltline-ag2.db", help="store URL (default: %(default)s)"
    )
    args = parser.parse_args()
    logging.getLogger("autogen.oai.client").setLevel(logging.WARNING)  # "custom model client detected"
    store = voltline.connect(args.store)
    print("instrumented:", ", ".join(voltline.instrument()) or "nothing (is voltline-ag2 installed?)")
    try:
        for run, question in ((two_agent_chat, "What is 6 * 7?"), (group_chat, "What is 12 * 3?")):
            with (
                voltline.rollout({"question": question}, store=store) as rollout,
                IOStream.set_default(QuietIO()),
            ):
                answer = run(question)
                a, b = map(int, re.findall(r"\d+", question))
                voltline.emit_reward(1.0 if str(a * b) in answer else 0.0)
            print(f"\n{question} -> {answer}")
            print_tree(store, rollout.rollout_id)
    finally:
        voltline.uninstrument()
        store.close()


if __name__ == "__main__":
    main()
