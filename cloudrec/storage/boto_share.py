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

from typing import Hashable, Optional

from cloudrec.storage.shared_results import SharedResults

_shared = SharedResults()   # search path -> botocore Loader


def _search_path(search_path_string: Optional[str] = None) -> Hashable:
    return ("search_path", search_path_string)


def share_loaders() -> bool:
    """Make botocore sessions share one data loader per search path (idempotent).

    Returns False when botocore is not installed (nothing to share)."""
    if _shared.installed:
        return True
    try:
        import botocore.session as bsession
    except ImportError:
        return False
    return _shared.install(bsession, "create_loader", _search_path)
