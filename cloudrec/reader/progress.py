"""Epoch progress under the 'steps' partition: global records consumed, plus the legs before.

An epoch's state is the number of records all ranks consumed (``consumed``,
``min(n, i*W*B)`` after i rank batches under one layout, whatever the number
of DataLoader workers), the layout it is being consumed under (``layout``:
world size, workers, batch size, last) and the closed ``legs`` of earlier
layouts of the same epoch (a resume with another world size or worker
count). :func:`resolve` turns that into what a process needs: the remaining
order (lazy), the current :class:`~cloudrec.reader.partition.Layout` and how
many of its rank batches are done.
"""
from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence, Tuple

from cloudrec.errors import ConfigError
from cloudrec.reader.partition import Layout, Leg, RemainingOrder

Spec = Tuple[int, int, int, str]           # (world_size, num_workers, batch_size, last)


def batches_done(layout: Layout, consumed: int) -> int:
    """Rank batches behind ``consumed`` records of ``layout`` (a step boundary, or the end)."""
    if consumed >= layout.consumed(layout.T):
        if consumed > layout.n:
            raise ConfigError(f"sampler state consumed {consumed} records of an epoch of {layout.n}")
        return layout.T
    step = layout.W * layout.B
    if consumed % step:
        raise ConfigError(f"sampler state consumed {consumed} records, not a whole step of "
                          f"{layout.W} ranks x {layout.B}: it was not written by this layout")
    return consumed // step


def resolve(order: Any, legs: Sequence[Leg], saved: Optional[Spec], saved_at: int, mine: Spec,
            consumed: int) -> Tuple[RemainingOrder, Layout, int, List[Leg]]:
    """(remaining order, layout ``mine`` over it, rank batches done, effective closed legs).

    ``saved`` is the layout a restored state had consumed ``saved_at`` records
    under (None: ``mine``); if it differs from ``mine`` and made progress, it is
    closed there as one more leg and the rest of ``consumed`` counts under ``mine``.
    """
    saved = effective_saved(saved, mine)
    legs = list(legs) if consumed > 0 else []
    rest = RemainingOrder(order, legs)
    here = consumed - rest.consumed
    if here < 0:
        raise ConfigError(f"sampler state consumed {consumed} records but its legs account for "
                          f"{rest.consumed}")
    upto = min(saved_at, consumed) - rest.consumed
    if saved is not None and tuple(saved) != tuple(mine) and upto > 0:
        old = Layout(rest.n, *saved)
        legs.append(Leg(*saved, batches_done(old, upto)))
        rest = RemainingOrder(order, legs)
        here = consumed - rest.consumed
    layout = Layout(rest.n, *mine)
    return rest, layout, batches_done(layout, here), legs


def parse_legs(state: Mapping[str, Any]) -> Tuple[List[Leg], Optional[Spec]]:
    """The closed legs and the saved layout of a version-2 state."""
    raw = state.get("legs", [])
    if not isinstance(raw, (list, tuple)):
        raise ConfigError(f"sampler state has malformed legs {raw!r}")
    legs = [Leg.from_list(x) for x in raw]
    layout = state.get("layout")
    if layout is None:
        return legs, None
    if not isinstance(layout, (list, tuple)) or len(layout) != 4:
        raise ConfigError(f"sampler state has a malformed layout {layout!r}")
    w, k, b, last = layout
    # workers 0: not declared by the adapter that counted the batches (assume unchanged)
    spec = Leg.from_list([w, k or 1, b, last, 0])
    if spec.last == "prefix":
        raise ConfigError(f"sampler state has a malformed layout {layout!r}")
    return legs, (spec.world_size, int(k), spec.batch_size, spec.last)


def effective_saved(saved: Optional[Spec], mine: Spec) -> Optional[Spec]:
    """The saved layout with an undeclared worker count (0) filled in: unchanged when the rest
    of the layout is, else 1 (a sampler iterated in-process)."""
    if saved is None or saved[1]:
        return saved
    if (saved[0], saved[2], saved[3]) == (mine[0], mine[2], mine[3]):
        return None
    return (saved[0], 1, saved[2], saved[3])
