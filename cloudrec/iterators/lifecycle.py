"""Releasing an iterator's threads and readers when it is dropped without ``close()``.

MXNet-style code never calls ``close()``, so every iterator registers a
``weakref.finalize`` holding only its pools and readers (never the iterator).
A garbage-collection pass may run that finalizer on any thread, including
one of the iterator's own decode or fetch threads, which cannot join its own
pool: there the release is handed to a short-lived daemon thread.
"""
from __future__ import annotations

import threading
import weakref
from typing import Any, Callable, Optional

__all__ = ["release", "weak_step"]


def weak_step(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` (bound to an iterator) without a strong reference to the iterator, for the
    pipeline's threads: an iterator nobody closed is still collected and finalized."""
    from cloudrec.pipeline.batcher import PipelineClosed
    wm = weakref.WeakMethod(method)

    def step(*args: Any) -> Any:
        f = wm()
        if f is None:
            raise PipelineClosed("the iterator was garbage-collected")
        return f(*args)
    return step


def release(*closers: Optional[Callable[[], None]]) -> None:
    """Call each closer (None skipped); off the main thread, in a fresh daemon thread."""
    def run() -> None:
        for close in closers:
            if close is not None:
                try:
                    close()
                except Exception:  # a finalizer must not raise; the parts are going away
                    pass
    if threading.current_thread() is threading.main_thread():
        run()
    else:
        threading.Thread(target=run, name="cloudrec-release", daemon=True).start()
