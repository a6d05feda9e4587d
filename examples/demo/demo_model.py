"""The demo's model: a tiny character-level Qwen2 that adds two numbers, built offline and cached.

A random model never answers "a+b=" correctly, so GRPO would see no reward at all. The model is
therefore pre-trained briefly with full-parameter SFT, just enough to be right some of the time
(`ModelSpec()`: 200 steps, greedy accuracy ~0.2-0.4; the demo uses 280 steps, greedy ~0.57,
sampled ~0.38 on its held-out problems), which leaves GRPO plenty of room to improve. The
result is saved as a normal Hugging Face folder (model, tokenizer, chat template) that the
Voltline proxy serves like any other.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ModelSpec",
    "Problem",
    "accuracy",
    "cache_root",
    "ensure_model",
    "make_problems",
    "sampled_accuracy",
    "split_problems",
]

EOS = "<eos>"
UNK = "<unk>"
CHARS = "0123456789+="
# The prompt is the user's message verbatim ("12+7="); the model continues with the sum and
# <eos>. Any system message is ignored so the character vocabulary never meets free text.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ message['content'] }}{% endif %}{% endfor %}"
)

Problem = dict[str, int]  # {"a": 12, "b": 7}


@dataclass(frozen=True)
class ModelSpec:
    """Everything that determines the cached model; its hash names the cache folder."""

    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 704
    sft_steps: int = 200
    sft_batch: int = 128
    sft_lr: float = 1e-3
    max_operand: int = 50
    seed: int = 0

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def make_problems(n: int, seed: int, max_operand: int = 50) -> list[Problem]:
    rng = random.Random(seed)
    return [{"a": rng.randrange(max_operand), "b": rng.randrange(max_operand)} for _ in range(n)]


def split_problems(max_operand: int, held_out: int, seed: int = 0) -> tuple[list[Problem], list[Problem]]:
    """Every "a+b=" problem once, shuffled and split into (training pool, `held_out` problems).

    There are only max_operand**2 distinct problems (2,500), so problems drawn independently
    for training and evaluation would overlap; held-out accuracy is measured on problems that
    training never asks.
    """
    pairs = [{"a": a, "b": b} for a in range(max_operand) for b in range(max_operand)]
    random.Random(seed).shuffle(pairs)
    return pairs[held_out:], pairs[:held_out]


def prompt_of(problem: Problem) -> str:
    return f"{problem['a']}+{problem['b']}="


def cache_root() -> Path:
    """`$VOLTLINE_DEMO_CACHE`, else `~/.cache/voltline/demo`."""
    env = os.environ.get("VOLTLINE_DEMO_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "voltline" / "demo"


def _tokenizer() -> Any:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {EOS: 0, UNK: 1, **{c: i + 2 for i, c in enumerate(CHARS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    # One token per character; Fuse joins them back without the spaces WordLevel would add.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=EOS, unk_token=UNK, bos_token=None
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _sft_batch(tokenizer: Any, problems: Sequence[Problem], torch: Any) -> dict[str, Any]:
    """Right-padded prompt + answer + eos; the loss covers the answer and eos only."""
    rows, labels = [], []
    for p in problems:
        prompt = tokenizer.encode(prompt_of(p), add_special_tokens=False)
        answer = [*tokenizer.encode(str(p["a"] + p["b"]), add_special_tokens=False), tokenizer.eos_token_id]
        rows.append(prompt + answer)
        labels.append([-100] * len(prompt) + answer)
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    lab = torch.tensor([lb + [-100] * (width - len(lb)) for lb in labels])
    return {"input_ids": ids, "attention_mask": mask, "labels": lab}


def accuracy(
    model: Any, tokenizer: Any, problems: Sequence[Problem], *, sample: bool, seed: int = 0
) -> float:
    """Share of problems answered exactly, decoding greedily or sampling at temperature 1."""
    return sum(_right_answers(model, tokenizer, problems, sample, seed)) / len(problems)


def _right_answers(
    model: Any, tokenizer: Any, problems: Sequence[Problem], sample: bool, seed: int
) -> list[bool]:
    import torch

    prompts = [tokenizer.encode(prompt_of(p), add_special_tokens=False) for p in problems]
    width = max(map(len, prompts))
    pad = tokenizer.pad_token_id
    # Left padding with position ids from the mask (RoPE would forgive it anyway).
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=sample,
            temperature=1.0 if sample else None, top_k=0 if sample else None, top_p=1.0 if sample else None,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=pad,
        )  # fmt: skip
    right = []
    for p, row in zip(problems, out[:, width:].tolist(), strict=True):
        text = tokenizer.decode(row, skip_special_tokens=True).strip()
        right.append(text == str(p["a"] + p["b"]))
    return right


def sampled_accuracy(
    model: Any, tokenizer: Any, problems: Sequence[Problem], repeats: int, seed: int = 0
) -> tuple[float, float]:
    """Mean and standard error of sampled (T=1) accuracy, sampling each problem `repeats` times.

    The error is over problems (the std of per-problem means / sqrt(n)), so repeats shrink the
    sampling noise without pretending the repeats are independent problems.
    """
    per_problem = [0.0] * len(problems)
    for r in range(repeats):
        for i in range(0, len(problems), 512):
            chunk = problems[i : i + 512]
            for j, right in enumerate(_right_answers(model, tokenizer, chunk, True, seed + 1000 * r + i)):
                per_problem[i + j] += right / repeats
    n = len(per_problem)
    mean = sum(per_problem) / n
    var = sum((x - mean) ** 2 for x in per_problem) / max(n - 1, 1)
    return mean, math.sqrt(var / n)


def _build(spec: ModelSpec, out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, Qwen2Config

    tokenizer = _tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads, max_position_embeddings=64, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.sft_lr)
    rng = random.Random(spec.seed)
    started = time.monotonic()
    model.train()
    for step in range(1, spec.sft_steps + 1):
        problems = make_problems(spec.sft_batch, rng.randrange(2**31), spec.max_operand)
        loss = model(**_sft_batch(tokenizer, problems, torch)).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 50 == 0 or step == spec.sft_steps:
            log(f"  pre-training (SFT) step {step}/{spec.sft_steps}: loss {loss.item():.3f}")
    model.eval()
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    probe = make_problems(256, 12345, spec.max_operand)
    info = {
        "spec": asdict(spec),
        "params": sum(p.numel() for p in model.parameters()),
        "sft_seconds": round(time.monotonic() - started, 1),
        "greedy_accuracy": accuracy(model, tokenizer, probe, sample=False),
        "sampled_accuracy": accuracy(model, tokenizer, probe, sample=True),
    }
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "voltline-demo.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def ensure_model(
    spec: ModelSpec, root: Path | None = None, log: Callable[[str], None] = print
) -> tuple[Path, dict[str, Any]]:
    """The cached model folder for `spec`, building (and pre-training) it on first use."""
    folder = (root or cache_root()) / f"adder-{spec.key()}"
    marker = folder / "voltline-demo.json"
    if marker.exists():
        return folder, json.loads(marker.read_text())
    log(f"building the demo model in {folder} (once; cached afterwards)")
    # Build beside the final folder and rename, so an interrupted build is never mistaken
    # for a finished one and two concurrent builds cannot interleave their files.
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    info = _build(spec, tmp, log)
    try:
        tmp.rename(folder)
    except OSError:  # another process finished first: use its copy
        shutil.rmtree(tmp, ignore_errors=True)
    return folder, json.loads(marker.read_text()) if marker.exists() else info
