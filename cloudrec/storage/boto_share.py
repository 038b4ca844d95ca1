"""One botocore data loader per process, so forked workers inherit parsed service models.

Every s3fs filesystem makes its own (aio)botocore session, and every session
makes its own ``Loader``, which parses botocore's JSON service description
for S3 (several MB) on its first client.  A DataLoader worker forked from a
process that already read from S3 builds fresh filesystems (clients and event
loops do not survive fork), so each worker parsed the same JSON again:
~0.4-0.9 CPU-seconds per worker, the largest part of the time to the first
batch on 2 cores (``bench/peers.py``).  Sharing one loader per search path
makes the parse happen once per process tree: the children inherit the
parent's loader, caches included, through fork.

The loader only reads botocore's installed data files (immutable), and
botocore already hands the same cached dicts to every client of one
session, so sharing them between sessions changes nothing else.  A session
that registers its own ``data_loader`` component still gets its own.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Dict, Optional

from cloudrec.storage.fork_locks import renew_in_child

_lock = threading.Lock()
renew_in_child(__name__, "_lock")  # another thread may hold it at a fork
_installed = False
_loaders: Dict[Optional[str], Any] = {}


def share_loaders() -> bool:
    """Make botocore sessions share one data loader per search path (idempotent).

    Returns False when botocore is not installed (nothing to share)."""
    global _installed
    if _installed:
        return True
    with _lock:
        if _installed:
            return True
        try:
            import botocore.session as bsession
        except ImportError:
            return False
        original: Callable[..., Any] = bsession.create_loader

        def create_loader(search_path_string: Optional[str] = None) -> Any:
            loader = _loaders.get(search_path_string)
            if loader is None:
                with _lock:
                    loader = _loaders.get(search_path_string)
                    if loader is None:
                        loader = _loaders[search_path_string] = original(search_path_string)
            return loader

        create_loader.__doc__ = original.__doc__
        create_loader.__wrapped__ = original  # type: ignore[attr-defined]
        bsession.create_loader = create_loader
        _installed = True
        return True
