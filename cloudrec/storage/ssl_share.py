"""One TLS context per CA setting per process tree for aiobotocore's HTTP sessions.

Every s3fs filesystem opens its own aiobotocore HTTP session, and each session
builds a new ``ssl.SSLContext`` and loads the whole CA bundle into it
(certifi's, ~150 certificates): 55-75 ms of CPU, even for an ``http://``
endpoint that never does TLS.  A DataLoader worker forked from a process that
already read from S3 makes a fresh filesystem (clients and event loops do not
survive fork), so every worker paid that again before its first byte: about
half of its ~90 ms from fork to first bytes on 2 cores (``bench/peers.py``).

Sessions with the same ``verify`` setting (True, False or a CA bundle path)
now take one context, built on first use and inherited by forked children.
A context is only read once built (aiohttp wraps sockets with it, which is
thread-safe), so sharing it changes nothing else.  A session with a client
certificate or a proxy still builds its own: those steps modify the context.
"""
from __future__ import annotations

import os
import ssl
from typing import Any, Hashable, List, Optional

from cloudrec.storage.shared_results import SharedResults

_shared = SharedResults()   # verify setting -> (ssl context, proxy ssl context)


def _key(verify: Any) -> Optional[Hashable]:
    """What decides a verify context: the setting, and for a CA bundle path the file's
    identity (a replaced bundle gets a new context); None: not shareable."""
    if isinstance(verify, bool):
        return verify
    if isinstance(verify, (str, os.PathLike)):
        path = os.fspath(verify)
        try:
            st = os.stat(path)
        except OSError:
            return None   # let aiobotocore report the missing bundle as it always does
        return path, st.st_ino, st.st_size, st.st_mtime_ns
    return None


def _session_key(session: Any, proxy_url: Optional[str]) -> Optional[Hashable]:
    """A session's context is shared unless a client certificate or a proxy is involved
    (those steps modify the context)."""
    if proxy_url or getattr(session, "_cert_file", None):
        return None
    return _key(getattr(session, "_verify", None))


def share_ssl_contexts() -> bool:
    """Make aiobotocore HTTP sessions share one SSL context per ``verify`` setting
    (idempotent).  Returns False when aiobotocore (or the hook it has) is absent."""
    if _shared.installed:
        return True
    try:
        from aiobotocore.httpsession import AIOHTTPSession
    except ImportError:
        return False
    return _shared.install(AIOHTTPSession, "_build_ssl_contexts", _session_key)


def built() -> int:
    """Contexts built since the share was installed (in this process or, before a
    fork, its parent): for tests."""
    return _shared.built


def shared_contexts() -> List[ssl.SSLContext]:
    """The contexts built so far (one per ``verify`` setting sessions used)."""
    return [pair[0] for pair in _shared.results.values()]
