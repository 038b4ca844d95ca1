"""Test helper: run a check in a forked child and bring its outcome back to the parent.

The fork tests (DataLoader-style workers) all need the same care: the child reports
through a pipe, never runs on inside pytest, and cannot hang the suite.
"""
from __future__ import annotations

import os
import select
from typing import Callable


def run_in_fork(check: Callable[[], bool], child_timeout: float, wait: float) -> bytes:
    """Fork, run ``check()`` in the child and return what it reported: ``b"1"`` (True),
    ``b"0"`` (False), ``b"E <type>: <message>"`` (it raised) or ``b"timeout"``.

    The child exits after ``child_timeout`` s at the latest (dumping its stacks); the
    parent waits ``wait`` s for the report, then reaps the child.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        import faulthandler
        faulthandler.dump_traceback_later(child_timeout, exit=True)  # never hang the suite
        try:
            os.write(w, b"1" if check() else b"0")
        except BaseException as exc:  # report, never run on inside pytest
            os.write(w, f"E {type(exc).__name__}: {exc}".encode()[:500])
        finally:
            os._exit(0)
    os.close(w)
    ready, _, _ = select.select([r], [], [], wait)
    got = os.read(r, 500) if ready else b"timeout"
    os.close(r)
    os.waitpid(pid, 0)
    return got
