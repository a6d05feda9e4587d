"""The local backend: a Hugging Face causal LM run with transformers, batching concurrent requests.

One worker thread owns the model. Requests queue up; the worker takes every waiting request
that wants the same weights (base, or one adapter version), left-pads them into one batch and
decodes step by step with a KV cache, handing each token (id, logprob) to its request's
asyncio queue as soon as it is sampled. Logprobs are the model's raw log-softmax at that
step (before temperature or top-p), which is what a plain forward pass over prompt+completion
reproduces and what RL needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import queue
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .adapters import unpack_adapter
from .errors import ProxyError
from .protocol import dtype_kwargs

__all__ = ["GenJob", "LocalEngine", "Sampling"]

log = logging.getLogger("voltline.proxy")


@dataclass
class Sampling:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    top_logprobs: int = 0


@dataclass
class GenJob:
    """One request: `n` samples of a prompt. Events go to `events` on the request's loop:
    ("token", choice, id, logprob, top) · ("done", choice, finish_reason) · ("error", exc)."""

    prompt_ids: list[int]
    sampling: Sampling
    n: int = 1
    variant: int | None = None  # adapter version, None for the base model
    stop_check: Callable[[list[int]], bool] | None = None  # runs on the worker: a stop string seen?
    loop: asyncio.AbstractEventLoop | None = None
    events: asyncio.Queue[tuple[Any, ...]] = field(default_factory=asyncio.Queue)
    cancelled: bool = False

    def put(self, event: tuple[Any, ...]) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)


class LocalEngine:
    """Owns the model and its worker thread. `fetch_adapter(version)` returns packed adapter bytes."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        device: str | None = None,
        max_batch: int = 16,
        fetch_adapter: Callable[[int], bytes] | None = None,
        max_adapters: int = 4,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, **dtype_kwargs(torch.float32))
        self.model.to(self.device)
        self.model.eval()
        self.context_length = int(getattr(self.model.config, "max_position_embeddings", 2048))
        eos: set[int] = set()
        try:
            gen = GenerationConfig.from_pretrained(model_dir)
            ids = gen.eos_token_id
            eos.update([ids] if isinstance(ids, int) else ids or [])
        except OSError:
            pass
        if self.tokenizer.eos_token_id is not None:
            eos.add(self.tokenizer.eos_token_id)
        self.eos_ids = eos
        self.pad_id = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(eos or {0})
        )
        params = inspect.signature(self.model.forward).parameters
        # transformers 5 renamed `past_key_values` to `cache`; keep working with both.
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._last_only = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self.max_batch = max_batch
        self.fetch_adapter = fetch_adapter
        self.max_adapters = max_adapters
        self._adapters: dict[int, Path] = {}  # loaded adapter versions, oldest first
        self._active: int | None = None
        self._peft: Any = None  # a peft.PeftModel around `model` once an adapter is loaded
        self._pending: queue.Queue[GenJob | None] = queue.Queue()
        self._held: list[GenJob] = []
        self._thread = threading.Thread(target=self._run, name="voltline-proxy-engine", daemon=True)
        self._thread.start()

    # request side --------------------------------------------------------------------
    def submit(self, job: GenJob) -> GenJob:
        job.loop = asyncio.get_running_loop()
        self._pending.put(job)
        return job

    def close(self) -> None:
        self._pending.put(None)
        self._thread.join(timeout=10)
        for path in self._adapters.values():
            shutil.rmtree(path, ignore_errors=True)

    # worker side ----------------------------------------------------------------------
    def _next_batch(self) -> list[GenJob] | None:
        if not self._held:
            first = self._pending.get()
            if first is None:
                return None
            self._held.append(first)
        while True:  # everything already waiting joins this round
            try:
                job = self._pending.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._pending.put(None)
                break
            self._held.append(job)
        variant = self._held[0].variant
        batch, rows, rest = [], 0, []
        for job in self._held:
            if job.variant == variant and (not batch or rows + job.n <= self.max_batch):
                batch.append(job)
                rows += job.n
            else:
                rest.append(job)
        self._held = rest
        return batch

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            batch = [job for job in batch if not job.cancelled]
            if not batch:
                continue
            try:
                with self._use_variant(batch[0].variant):
                    self._generate(batch)
            except Exception as exc:  # one bad batch must not stop the server
                log.exception("voltline proxy: generation failed")
                for job in batch:
                    job.put(("error", exc))

    def _use_variant(self, version: int | None) -> Any:
        """Make `version` the active adapter; returns a context to run the batch in (for the
        base model, one with the adapters switched off)."""
        if version is None:
            return self._peft.disable_adapter() if self._peft is not None else contextlib.nullcontext()
        if version not in self._adapters:
            self._load_adapter(version)
        if self._active != version:
            self._peft.set_adapter(f"v{version}")
            self._active = version
        return contextlib.nullcontext()

    def _load_adapter(self, version: int) -> None:
        if self.fetch_adapter is None:
            raise ProxyError(404, f"adapter version {version} requested but no adapter store is configured")
        from peft import PeftModel

        path = unpack_adapter(self.fetch_adapter(version))
        name = f"v{version}"
        if self._peft is None:  # the first adapter wraps the model; later ones load beside it
            self._peft = PeftModel.from_pretrained(self.model, str(path), adapter_name=name).eval()
        else:
            self._peft.load_adapter(str(path), adapter_name=name)
        self._adapters[version] = path
        while len(self._adapters) > self.max_adapters:  # keep memory bounded: drop the oldest
            old = next(iter(self._adapters))
            if old == self._active:
                break
            self._peft.delete_adapter(f"v{old}")
            shutil.rmtree(self._adapters.pop(old), ignore_errors=True)
        log.info("voltline proxy: loaded adapter version %d", version)

    def _generate(self, jobs: list[GenJob]) -> None:
        torch = self.torch
        rows = [(job, c) for job in jobs for c in range(job.n)]
        width = max(len(job.prompt_ids) for job in jobs)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (job, _) in enumerate(rows):  # left padding: every row's last token lines up
            n = len(job.prompt_ids)
            ids[r, width - n :] = torch.tensor(job.prompt_ids)
            mask[r, width - n :] = 1
        gens = []
        for job, c in rows:
            g = None
            if job.sampling.seed is not None:
                g = torch.Generator().manual_seed(job.sampling.seed + c)
            gens.append(g)
        counts = [0] * len(rows)
        outs: list[list[int]] = [[] for _ in rows]
        active = [True] * len(rows)
        outbox: list[tuple[GenJob, tuple[Any, ...]]] = []
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        ids, mask, positions = ids.to(self.device), mask.to(self.device), positions.to(self.device)
        with torch.inference_mode():
            model = self._peft if self._peft is not None else self.model
            out = model(
                input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **self._last_only
            )
            while True:
                logits = out.logits[:, -1, :].float()
                logp = torch.log_softmax(logits, dim=-1).cpu()
                logits = logits.cpu()
                next_ids = []
                for r, (job, _) in enumerate(rows):
                    if active[r] and job.cancelled:
                        active[r] = False
                picks = _sample_rows(torch, logits, rows, active, gens, self.pad_id)
                picked_logp = logp.gather(1, torch.tensor(picks).unsqueeze(1)).squeeze(1).tolist()
                for r, (job, c) in enumerate(rows):
                    if not active[r]:
                        next_ids.append(self.pad_id)
                        continue
                    s = job.sampling
                    tok = picks[r]
                    top = None
                    if s.top_logprobs:
                        values, idx = torch.topk(logp[r], s.top_logprobs)
                        top = list(zip(idx.tolist(), values.tolist(), strict=True))
                    outbox.append((job, ("token", c, tok, picked_logp[r], top)))
                    outs[r].append(tok)
                    counts[r] += 1
                    next_ids.append(tok)
                    finish = None
                    if tok in self.eos_ids or (job.stop_check is not None and job.stop_check(outs[r])):
                        finish = "stop"
                    elif counts[r] >= s.max_tokens:
                        finish = "length"
                    if finish:
                        active[r] = False
                        outbox.append((job, ("done", c, finish)))
                _deliver(outbox)
                outbox = []
                if not any(active):
                    break
                step = torch.tensor(next_ids, dtype=torch.long, device=self.device).unsqueeze(1)
                mask = torch.cat([mask, torch.ones_like(step)], dim=1)
                positions = positions[:, -1:] + 1
                cache = out.get("cache") or out.get("past_key_values")
                out = model(
                    input_ids=step,
                    attention_mask=mask,
                    position_ids=positions,
                    use_cache=True,
                    **{self._cache_arg: cache},
                )


def _deliver(outbox: list[tuple[GenJob, tuple[Any, ...]]]) -> None:
    """Hand a step's events to their requests: one wake-up per event loop per step, not per
    token, so the server's loop does not fight the engine thread for the GIL token by token."""
    by_loop: dict[int, tuple[asyncio.AbstractEventLoop, list[tuple[GenJob, tuple[Any, ...]]]]] = {}
    for job, event in outbox:
        assert job.loop is not None
        by_loop.setdefault(id(job.loop), (job.loop, []))[1].append((job, event))
    for loop, items in by_loop.values():
        loop.call_soon_threadsafe(_put_all, items)


def _put_all(items: list[tuple[GenJob, tuple[Any, ...]]]) -> None:
    for job, event in items:
        job.events.put_nowait(event)


def _sample_rows(
    torch: Any, logits: Any, rows: list[tuple[GenJob, int]], active: list[bool], gens: list[Any], pad: int
) -> list[int]:
    """The next token of every row (`pad` for inactive ones). Rows that sample plainly (no seed,
    no top-p) at one temperature share one softmax and one multinomial call, greedy rows one
    argmax: per-row tensor calls cost more than the model's forward pass at small sizes. Seeded
    rows draw from their own generator, row by row, so a seed gives the same tokens as alone."""
    picks = [pad] * len(rows)
    plain: dict[float, list[int]] = {}
    for r, (job, _) in enumerate(rows):
        if not active[r]:
            continue
        s = job.sampling
        if s.temperature <= 0:
            plain.setdefault(0.0, []).append(r)
        elif gens[r] is None and s.top_p >= 1.0:
            plain.setdefault(s.temperature, []).append(r)
        else:
            picks[r] = _sample(torch, logits[r], s.temperature, s.top_p, gens[r])
    for temperature, members in plain.items():
        index = torch.tensor(members)
        if temperature <= 0:
            chosen = torch.argmax(logits[index], dim=-1)
        else:
            chosen = torch.multinomial(torch.softmax(logits[index] / temperature, dim=-1), 1).squeeze(1)
        for r, tok in zip(members, chosen.tolist(), strict=True):
            picks[r] = tok
    return picks


def _sample(torch: Any, logits: Any, temperature: float, top_p: float, generator: Any) -> int:
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p  # always keeps the most likely token
        sorted_p = sorted_p * keep
        probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
    return int(torch.multinomial(probs, 1, generator=generator))
