"""Iterating a DataLoader so that an error stops its worker processes at once.

Why: torch re-raises a worker's exception inside the loader's iterator, and
the traceback keeps the iterator's frames, so the iterator outlives the loop
in a reference cycle.  The cyclic garbage collector frees it later, and by
then it has already run the weakref finalizers of the iterator's index
queues, which stop their feeder threads: the iterator's shutdown can no
longer tell the workers to stop, waits ``MP_STATUS_CHECK_INTERVAL`` (5 s) for
each one and kills it (a 10 s stall at some later collection with 2 workers,
in a notebook or a loop that skips a bad batch).  :func:`batches` shuts the
workers down while the iterator is still whole, as soon as an
exception leaves it.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

__all__ = ["batches"]


def batches(loader: Iterable[Any]) -> Iterator[Any]:
    """The batches of ``loader``; an exception leaving it stops the loader iterator's
    workers before it goes on.  Persistent workers are left alone (the loader keeps
    that iterator for its next epoch), as is a caller that stops early (the iterator
    is then freed at once and shuts down by itself)."""
    it = iter(loader)
    try:
        yield from it
    except Exception:
        stop = getattr(it, "_shutdown_workers", None)   # torch's multi-process iterator
        if callable(stop) and not getattr(it, "_persistent_workers", False):
            try:
                stop()
            except Exception:  # noqa: BLE001 - the original error is the one to report
                pass
        raise
