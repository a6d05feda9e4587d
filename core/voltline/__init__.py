"""Voltline: train the agents you already have.

Agents emit spans (through framework plugins or the emit API below), a store keeps them,
algorithms turn them into new versions of resources, and agents pick those up.
"""

from . import algorithms
from ._context import (
    RolloutContext,
    SpanHandle,
    bind_context,
    current_rollout,
    current_span,
    emit_exception,
    emit_llm,
    emit_message,
    emit_reward,
    emit_tool,
    emitter_stats,
    flush,
    rollout,
    span,
    start_span,
    use_span,
)
from ._errors import AttemptLost, InvalidInput, NotFound, SchemaOutOfDate, StoreUnavailable, VoltlineError
from ._models import (
    Attempt,
    AttemptStatus,
    Claim,
    Mode,
    ResourceKind,
    ResourceVersion,
    Rollout,
    RolloutStatus,
    Span,
    SpanKind,
    SpanStatus,
)
from ._plugins import instrument, uninstrument
from ._store import Store, connect
from ._trajectory import Trajectory, Turn
from .adapter import build_trajectories
from .algorithms import Algorithm
from .hookspecs import hookimpl
from .trainer import Trainer

__version__ = "0.1.0"

__all__ = [
    "Algorithm",
    "Attempt",
    "AttemptLost",
    "AttemptStatus",
    "Claim",
    "InvalidInput",
    "Mode",
    "NotFound",
    "ResourceKind",
    "ResourceVersion",
    "Rollout",
    "RolloutContext",
    "RolloutStatus",
    "SchemaOutOfDate",
    "Span",
    "SpanHandle",
    "SpanKind",
    "SpanStatus",
    "Store",
    "StoreUnavailable",
    "Trainer",
    "Trajectory",
    "Turn",
    "VoltlineError",
    "algorithms",
    "bind_context",
    "build_trajectories",
    "connect",
    "current_rollout",
    "current_span",
    "emit_exception",
    "emit_llm",
    "emit_message",
    "emit_reward",
    "emit_tool",
    "emitter_stats",
    "flush",
    "hookimpl",
    "instrument",
    "rollout",
    "span",
    "start_span",
    "uninstrument",
    "use_span",
]
