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
import threading
from typing import Any, Callable, Dict, Hashable, List, Optional, Tuple

from cloudrec.storage.fork_locks import renew_in_child

_lock = threading.Lock()
renew_in_child(__name__, "_lock")  # another thread may hold it at a fork
_installed = False
_contexts: Dict[Hashable, Tuple[Any, Any]] = {}
built = 0   # contexts this process (or its parent, before a fork) has built: for tests


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


def share_ssl_contexts() -> bool:
    """Make aiobotocore HTTP sessions share one SSL context per ``verify`` setting
    (idempotent).  Returns False when aiobotocore (or the hook it has) is absent."""
    global _installed
    if _installed:
        return True
    with _lock:
        if _installed:
            return True
        try:
            from aiobotocore.httpsession import AIOHTTPSession
        except ImportError:
            return False
        original: Optional[Callable[..., Any]] = getattr(AIOHTTPSession, "_build_ssl_contexts", None)
        if original is None:   # another aiobotocore: leave its sessions as they are
            return False

        def build(self: Any, proxy_url: Optional[str]) -> Tuple[Any, Any]:
            global built
            key = None if proxy_url or getattr(self, "_cert_file", None) else \
                _key(getattr(self, "_verify", None))
            if key is None:
                built += 1
                return original(self, proxy_url)
            pair = _contexts.get(key)
            if pair is None:
                with _lock:
                    pair = _contexts.get(key)
                    if pair is None:
                        built += 1
                        pair = _contexts[key] = original(self, proxy_url)
            return pair

        build.__doc__ = original.__doc__
        build.__wrapped__ = original  # type: ignore[attr-defined]
        AIOHTTPSession._build_ssl_contexts = build
        _installed = True
        return True


def shared_contexts() -> List[ssl.SSLContext]:
    """The contexts built so far (one per ``verify`` setting sessions used)."""
    return [pair[0] for pair in _contexts.values()]
