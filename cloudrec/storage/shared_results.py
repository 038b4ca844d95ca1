"""One result per key for a library function that every new client calls again.

Botocore's service-model loader and aiobotocore's TLS-context builder run once
per new S3 client, and a forked DataLoader worker makes new clients; their
results depend only on a small key (a search path, a ``verify`` setting), so a
process tree can share them (:mod:`cloudrec.storage.boto_share`,
:mod:`cloudrec.storage.ssl_share`).  :class:`SharedResults` patches such a
function once per process and keeps one result per key, computed on first use
and inherited by forked children.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Callable, Dict, Hashable, Optional


class SharedResults:
    """``install(owner, attr, key)`` swaps ``owner.attr`` for a wrapper that calls the
    original once per ``key(*args)`` and hands every later caller that result;
    ``key`` returning None means "not shareable" (the original runs each time).
    ``built`` counts the original's calls since install (for tests)."""

    def __init__(self) -> None:
        self.results: Dict[Hashable, Any] = {}
        self.built = 0
        self.installed = False
        self._lock = threading.Lock()
        if hasattr(os, "register_at_fork"):   # a thread may hold the lock at a fork
            os.register_at_fork(after_in_child=self._renew_lock)

    def _renew_lock(self) -> None:
        self._lock = threading.Lock()

    def install(self, owner: Any, attr: str, key: Callable[..., Optional[Hashable]]) -> bool:
        """Patch ``owner.attr`` (idempotent); False when it does not exist."""
        if self.installed:
            return True
        with self._lock:
            if self.installed:
                return True
            original: Optional[Callable[..., Any]] = getattr(owner, attr, None)
            if original is None:
                return False

            def shared(*args: Any, **kwargs: Any) -> Any:
                k = key(*args, **kwargs)
                if k is None:
                    self.built += 1
                    return original(*args, **kwargs)
                if k not in self.results:
                    with self._lock:
                        if k not in self.results:
                            self.built += 1
                            self.results[k] = original(*args, **kwargs)
                return self.results[k]

            shared.__doc__ = original.__doc__
            shared.__wrapped__ = original  # type: ignore[attr-defined]
            setattr(owner, attr, shared)
            self.installed = True
            return True
