"""`voltline model init DIR`: a tiny causal LM and tokenizer built here, with no download.

The tokenizer is a byte-level BPE trained in about a second on a small built-in corpus, so
any text round-trips through it and no vocabulary has to be fetched. The model is a Qwen2
(RoPE, so left padding cannot shift positions) with random weights: useless for answers, fine
for testing every path of the proxy and of RL training on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["CHAT_TEMPLATE", "init_model"]

EOS = "<|endoftext|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"

# ChatML with tools, in the style of Qwen2.5: tool schemas go in the system turn, the model
# answers a call as <tool_call>{"name": ..., "arguments": {...}}</tool_call>, and tool results
# come back in a `tool` turn. Message contents are plain strings by the time they get here.
CHAT_TEMPLATE = (
    "{% if tools %}"
    "<|im_start|>system\n"
    "{% if messages[0].role == 'system' %}{{ messages[0].content }}\n\n{% endif %}"
    "# Tools\nYou may call one or more functions. Function signatures:\n<tools>\n"
    "{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}"
    '</tools>\nAnswer a call as <tool_call>{"name": <name>, "arguments": <json>}</tool_call>'
    "<|im_end|>\n"
    "{% elif messages[0].role == 'system' %}"
    "<|im_start|>system\n{{ messages[0].content }}<|im_end|>\n"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if message.role == 'system' and loop.first %}"
    "{% elif message.role == 'assistant' %}"
    "<|im_start|>assistant\n{{ message.content or '' }}"
    "{% for call in message.tool_calls or [] %}"
    '<tool_call>{"name": {{ call.function.name | tojson }}, "arguments": {{ call.function.arguments }}}'
    "</tool_call>"
    "{% endfor %}<|im_end|>\n"
    "{% else %}"
    "<|im_start|>{{ message.role }}\n{{ message.content or '' }}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = """\
You are a helpful assistant. What is the weather in Paris today? It is sunny and 21 degrees.
Call the function get_weather with the city name. {"name": "get_weather", "arguments": {"city": "Paris"}}
The answer is 42. Let me think step by step: 2 + 3 = 5, 7 * 6 = 42, 10 - 4 = 6.
def add(a: int, b: int) -> int:\n    return a + b\n
Tools, agents, rollouts, spans, rewards and resources. The quick brown fox jumps over the lazy dog.
Hello world! How are you? I am fine, thank you. Please summarise the document in one sentence.
"""


def _train_tokenizer(vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Byte level: every byte has a token, so any text encodes and decodes exactly.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=EOS, bos_token=None, unk_token=None
    )
    # Not special: they must survive skip_special_tokens so tool calls can be parsed from text.
    fast.add_tokens([TOOL_OPEN, TOOL_CLOSE])
    fast.chat_template = CHAT_TEMPLATE
    return fast


def init_model(
    directory: str | Path,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    vocab_size: int = 512,
    context_length: int = 1024,
    seed: int = 0,
) -> Path:
    """Write a tiny random Qwen2 model, its tokenizer and chat template to `directory`."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, Qwen2Config

    from .protocol import dtype_kwargs

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(vocab_size)
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    im_end_id = tokenizer.convert_tokens_to_ids(IM_END)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=context_length,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, **dtype_kwargs(torch.float32))
    # Both end the assistant turn: <|im_end|> closes a chat answer, <|endoftext|> a completion.
    model.generation_config = GenerationConfig(eos_token_id=[im_end_id, eos_id], pad_token_id=eos_id)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "voltline-model.json").write_text(json.dumps({"created_by": "voltline model init"}) + "\n")
    return out
