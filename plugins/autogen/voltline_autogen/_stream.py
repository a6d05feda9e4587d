"""Context-scoped proxying of async generators, and the "is anyone recording?" check.

AutoGen's agents, streaming model calls and teams are async generators. A span must be the
current span while the generator's own code runs (so model calls and tool tasks it starts
nest under it) but not while the consumer's code runs between items: setting a contextvar
inside a generator and yielding would leak it into the consumer. So the proxy enters the
span's context around each step of the inner generator only, in the consumer's task.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import voltline

from ._guard import capture_failed

__all__ = ["proxy_agen", "recording"]


def recording() -> bool:
    """True when a span started here would reach a rollout."""
    if voltline.current_rollout() is not None:
        return True
    parent = voltline.current_span()
    return parent is not None and parent.rollout is not None


def _entered(enter: Callable[[], AbstractContextManager[Any]]) -> AbstractContextManager[Any]:
    try:
        return enter()
    except Exception:
        capture_failed("enter span")
        return nullcontext()


def _safe(fn: Callable[..., None] | None, where: str, *args: Any) -> None:
    if fn is None:
        return
    try:
        fn(*args)
    except Exception:
        capture_failed(where)


async def proxy_agen(
    inner: AsyncGenerator[Any, Any],
    enter: Callable[[], AbstractContextManager[Any]],
    on_item: Callable[[Any], None] | None = None,
    on_end: Callable[[BaseException | None], None] | None = None,
) -> AsyncGenerator[Any, Any]:
    """Yield what `inner` yields, running each of its steps inside `enter()`.

    `asend`, `athrow` and `aclose` reach `inner` as they would without the proxy; its items and
    exceptions reach the consumer unchanged. `on_item`/`on_end` are capture callbacks: guarded.
    `on_end(error)` gets None for a normal end or an early close by the consumer.
    """
    error: BaseException | None = None
    try:
        send: Any = None
        throw: BaseException | None = None
        while True:
            with _entered(enter):
                try:
                    if throw is not None:
                        exc, throw = throw, None
                        item = await inner.athrow(exc)
                    else:
                        item = await inner.asend(send)
                except StopAsyncIteration:
                    return
            _safe(on_item, "on_item", item)
            try:
                send = yield item
            except GeneratorExit:
                with _entered(enter):
                    await inner.aclose()
                raise
            except BaseException as exc:  # thrown in by the consumer: the inner generator decides
                throw = exc
    except GeneratorExit:
        raise
    except BaseException as exc:
        error = exc
        raise
    finally:
        _safe(on_end, "on_end", error)
