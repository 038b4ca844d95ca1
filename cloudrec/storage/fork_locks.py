"""Module-level locks that a forked child gets afresh.

A DataLoader may fork its workers while another thread of the parent (a cache
download, a loader being set up) holds one of these locks; the child's copy
would then stay locked forever, and its first use would hang.
"""
from __future__ import annotations

import os
import sys
import threading

__all__ = ["renew_in_child"]


def renew_in_child(module: str, name: str) -> None:
    """After every fork, bind ``module.name`` in the child to a new ``threading.Lock``
    (readers must look the lock up by its module-level name, not keep a reference)."""
    def renew() -> None:
        setattr(sys.modules[module], name, threading.Lock())
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=renew)
