"""A LlamaIndex FunctionAgent captured by Voltline with no emit calls but the reward. Offline.

The agent answers a stock question with two tools: `lookup_stock` searches a tiny in-memory
vector index (embedded by `WordCountEmbedding`, defined here, so no embedding model is
downloaded) and `multiply` does the arithmetic. Its model is `ScriptedLLM`, a LlamaIndex LLM
that plays a fixed script of tool calls and answers, with token usage like a real provider.
`voltline.instrument()` is the only setup; the script then prints the span tree the run
produced. Afterwards try:

    voltline spans tree <rollout id> --url sqlite:///voltline-llamaindex.db
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys

from llama_index.core import Document, VectorStoreIndex
from llama_index.core.agent.workflow import AgentStream, FunctionAgent
from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.tools import FunctionTool
from voltline_llamaindex.testing import ScriptedLLM, ToolCalls

import voltline

QUESTION = "How many bolts are in 3 crates?"
NOTES = ["Each crate of bolts holds 40 bolts.", "Nuts ship in boxes of 100."]
VOCABULARY = ("bolt", "crate", "nut", "box")


class WordCountEmbedding(BaseEmbedding):
    """How often each VOCABULARY word occurs in the text: offline and deterministic."""

    # MockEmbedding would give every text the same vector, so the top hit would depend on
    # node order; word counts put the bolts note nearest to a query about bolts.
    def _get_text_embedding(self, text: str) -> list[float]:
        return [float(text.lower().count(word)) for word in VOCABULARY]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)


def build_agent() -> FunctionAgent:
    index = VectorStoreIndex.from_documents(
        [Document(text=t, id_=f"note-{i}") for i, t in enumerate(NOTES)],
        embed_model=WordCountEmbedding(),
    )
    retriever = index.as_retriever(similarity_top_k=1)

    def lookup_stock(query: str) -> str:
        """Search the warehouse notes."""
        return "\n".join(n.node.get_content() for n in retriever.retrieve(query))

    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b

    llm = ScriptedLLM(
        [
            ToolCalls(("lookup_stock", {"query": "bolts per crate"}, "call_1")),
            ToolCalls(("multiply", {"a": 3, "b": 40}, "call_2")),
            "3 crates hold 120 bolts.",
        ]
    )
    tools = [FunctionTool.from_defaults(lookup_stock), FunctionTool.from_defaults(multiply)]
    return FunctionAgent(
        name="stockkeeper",
        description="Answers stock questions.",
        tools=tools,
        llm=llm,
        system_prompt="Answer with the tools.",
    )


async def run(agent: FunctionAgent) -> str:
    handler = agent.run(QUESTION)
    streamed = ""
    async for event in handler.stream_events():  # the model's tokens, as a UI would show them
        if isinstance(event, AgentStream):
            streamed += event.delta
    result = await handler
    assert str(result) == streamed
    return str(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store", default="sqlite:///voltline-llamaindex.db", help="store URL (default: %(default)s)"
    )
    args = parser.parse_args()

    voltline.instrument()  # every installed plugin; LlamaIndex's registers its dispatcher handlers
    try:
        with voltline.rollout({"question": QUESTION}, store=args.store) as r:
            answer = asyncio.run(run(build_agent()))
            voltline.emit_reward(1.0 if "120" in answer else 0.0)
    finally:
        voltline.uninstrument()
    print(f"answer: {answer}")
    print(f"rollout: {r.rollout_id}")
    sys.stdout.flush()
    subprocess.run(
        [sys.executable, "-m", "voltline", "spans", "tree", r.rollout_id, "--url", args.store], check=True
    )


if __name__ == "__main__":
    main()
