"""Who owns a file left in shared memory: a process's pid namespace and liveness.

Batch files (:mod:`cloudrec.torch_shm`) and spool folders
(:mod:`cloudrec.reader.spool`) carry their owner's pid and pid namespace in their
names, so whoever finds them can tell an orphan from a file still in use, and never
judges a process of another container by a pid it cannot see.
"""
from __future__ import annotations

import os


def pid_namespace() -> str:
    """This process's pid namespace id (the inode of /proc/self/ns/pid), '0' if unknown."""
    try:
        link = os.readlink("/proc/self/ns/pid")   # 'pid:[4026531836]'
    except OSError:
        return "0"
    return "".join(c for c in link if c.isdigit()) or "0"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` (of this namespace) exists; another user's counts."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # someone else's process: alive
        return True
    return True
