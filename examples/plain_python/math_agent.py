"""A plain-Python agent, captured with Voltline's manual emit API. Runs offline.

The agent answers arithmetic questions: its "model" (a scripted stand-in, so the example
needs no weights or network) decides to call a calculator tool, reads the result, and
answers. Every model call, tool call and the reward go to the store as spans; the script
then prints what was stored. Try afterwards:

    voltline rollouts list
    voltline spans tree <rollout id>
"""

from __future__ import annotations

import argparse
import operator
import random
import re
import time

from rich.console import Console
from rich.table import Table

import voltline

OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


def tokenize(text: str) -> list[int]:
    """A byte-level toy tokenizer: real ids come from the LLM proxy in later examples."""
    return list(text.encode())


def scripted_model(messages: list[dict[str, str]], rng: random.Random) -> str:
    """Stands in for an LLM: asks for the calculator, then answers (sometimes carelessly)."""
    last = messages[-1]
    if last["role"] == "user":
        expression = re.search(r"(\d+ [-+*] \d+)", last["content"]).group(1)
        return f"CALL calculator({expression})"
    result = int(last["content"])
    return f"ANSWER {result + rng.choice([0, 0, 0, 1])}"  # an off-by-one now and then


def calculator(expression: str) -> int:
    a, op, b = expression.split()
    return OPS[op](int(a), int(b))


def run_agent(question: str, rng: random.Random) -> int:
    messages = [{"role": "user", "content": question}]
    with voltline.span("math-agent", kind="agent", **{"gen_ai.agent.name": "math-agent"}):
        for _ in range(4):
            started = time.time()
            reply = scripted_model(messages, rng)
            prompt_text = "\n".join(m["content"] for m in messages)
            voltline.emit_llm(
                model="scripted-math",
                input_messages=messages,
                output_messages=[{"role": "assistant", "content": reply}],
                prompt_token_ids=tokenize(prompt_text),
                response_token_ids=tokenize(reply),
                input_tokens=len(tokenize(prompt_text)),
                output_tokens=len(tokenize(reply)),
                start_time=started,
            )
            messages.append({"role": "assistant", "content": reply})
            if reply.startswith("ANSWER"):
                return int(reply.split()[1])
            expression = reply[len("CALL calculator(") : -1]
            result = calculator(expression)
            voltline.emit_tool("calculator", arguments={"expression": expression}, result=result)
            messages.append({"role": "tool", "content": str(result)})
    raise RuntimeError("the agent did not answer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="sqlite:///voltline.db", help="store URL (default: %(default)s)")
    parser.add_argument(
        "--rollouts", type=int, default=6, help="how many tasks to run (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    store = voltline.connect(args.store)
    ran = []
    for _ in range(args.rollouts):
        a, b, op = rng.randint(2, 99), rng.randint(2, 99), rng.choice(list(OPS))
        task = {"question": f"What is {a} {op} {b}?", "answer": OPS[op](a, b)}
        with voltline.rollout(task, store=store, metadata={"example": "math_agent"}) as r:
            answer = run_agent(task["question"], rng)
            voltline.emit_reward(1.0 if answer == task["answer"] else 0.0)
        ran.append(r.rollout_id)

    console = Console()
    table = Table(title=f"Stored in {args.store}")
    table.add_column("rollout", no_wrap=True)
    for column in ("question", "status", "spans", "llm calls", "reward"):
        table.add_column(column)
    for rollout_id in ran:
        rollout = store.get_rollout(rollout_id)
        spans = store.query_spans(rollout_id=rollout_id)
        reward = next(s.attributes["reward.value"] for s in spans if s.kind == "reward")
        table.add_row(
            rollout_id, rollout.input["question"], rollout.status.value, str(len(spans)),
            str(sum(s.kind == "llm" for s in spans)), f"{reward:.1f}",
        )  # fmt: skip
    console.print(table)
    first = store.query_spans(rollout_id=ran[0])
    console.print(f"\nSpans of {ran[0]} in order:")
    for s in first:
        console.print(f"  {s.sequence:>2}  {s.kind.value:<8} {s.name}")
    console.print(f"\nSee them as a tree: [bold]voltline spans tree {ran[0]} --url {args.store}[/bold]")
    store.close()


if __name__ == "__main__":
    main()
