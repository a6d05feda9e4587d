"""Ids for spans, attempts and completions, cheap on a busy agent thread.

Ids need to be unique, not unpredictable. `os.urandom` and `uuid4` release the GIL for their
system call, and with dozens of busy threads in the process (rollouts run concurrently, a
proxy served in-process) taking it back costs milliseconds per id. The global `random` is no
substitute: an agent that calls `random.seed(0)` per rollout would mint the same span ids
again. So: a private generator, seeded from `os.urandom`, reseeded in forked children.

Span ids are not random but *ascending*: a random 64-bit start per process, plus one per span.
Every span is a row keyed by its id, and random keys land on random pages of that B-tree index:
on SQLite, inserting a span into a 100k-span table cost three times what it cost into an empty
one (six times at 300k), while ascending keys go to the same last page and cost the same at any size
(`benchmarks/span_id_order.py`). Two processes collide only if their starts lie
within one run's span count of each other (about 1e-13 for a million spans each).
"""

from __future__ import annotations

import itertools
import os
import random

__all__ = ["new_span_id", "random_hex"]

_ids = random.Random()
_span_start = _ids.getrandbits(64)
_span_counter = itertools.count()


def _reseed() -> None:
    global _span_start, _span_counter
    _ids.seed()
    _span_start, _span_counter = _ids.getrandbits(64), itertools.count()


os.register_at_fork(after_in_child=_reseed)


def random_hex(nbytes: int) -> str:
    """`nbytes` random bytes as hex, like `os.urandom(nbytes).hex()` without a system call."""
    return _ids.getrandbits(8 * nbytes).to_bytes(nbytes, "big").hex()  # twice as quick as a format


def new_span_id() -> str:
    """A span id: 16 hex digits, unique, ascending within this process (see the module notes)."""
    # next() on itertools.count is atomic under the GIL: no lock for threads minting at once.
    return ((_span_start + next(_span_counter)) & 0xFFFF_FFFF_FFFF_FFFF).to_bytes(8, "big").hex()
