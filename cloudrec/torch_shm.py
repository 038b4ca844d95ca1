"""How a batch's payload bytes leave a DataLoader worker: through one file in /dev/shm.

A DataLoader worker pickles each batch into a pipe that holds 64 KB, so a batch of 64
JPEG payloads (4 MB) crosses in ~64 write/read turns, each waking the other process,
then is copied again when the main process unpickles it.  Measured with 2 forked
workers and 32 batches of 64 payloads of 40-90 KB (132 MB): 0.42-0.59 s per epoch
through the pipe, 0.17-0.18 s with the bytes in shared memory.  In a cold S3 epoch of
``bench/peers.py`` (~0.9 s) handing the batches over after the downloads took
0.2-0.45 s before and 0.17-0.2 s after.

So in a worker, :func:`shared_payloads` writes every large ``bytes``, ``bytearray`` or
numpy array found in a batch's dicts, lists and tuples into one ``/dev/shm`` file (one
``writev``) and leaves references in their place; unpickling in the main process reads
each back as an object of the same type and value (one copy) and unlinks the file.
The batch a user gets is unchanged.  Outside a worker, for small batches, without a
writable /dev/shm, or when it is full (``ENOSPC``: written with ``writev``, never
through a mapping that could fault), the batch is pickled as it is.

Files are named after the worker that wrote them (its pid and pid namespace).  torch
drops the batches still queued when it stops workers early (a ``break`` out of the
loop); a file whose worker has exited is such a leftover and is removed by
:func:`sweep_orphans`, which every worker runs before its first batch and the main
process at exit.  Files written from another pid namespace (containers sharing
/dev/shm with ``--ipc=host``) are never touched: their pids mean nothing here.
"""
from __future__ import annotations

import atexit
import itertools
import mmap
import os
import secrets
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from cloudrec.errors import CloudrecError
from cloudrec.processes import pid_alive, pid_namespace

__all__ = ["SHM_DIR", "MIN_ITEM", "MIN_TOTAL", "shared_payloads", "sweep_orphans"]

SHM_DIR = "/dev/shm"
PREFIX = "cloudrec-batch-"
MIN_ITEM = 8 << 10      # smaller objects stay in the pickle
MIN_TOTAL = 256 << 10   # a batch with fewer large bytes than this is pickled as it is
_IOV_MAX = 512

_counter = itertools.count()
_swept_in: Optional[int] = None   # pid of the process that ran its first sweep
_open: Dict[str, mmap.mmap] = {}  # main process: files being unpickled
_atexit_for: Optional[int] = None


class _Ref:
    """A large object's place in a batch: (file, offset, length, kind, dtype, shape)."""

    __slots__ = ("args",)

    def __init__(self, *args: Any) -> None:
        self.args = args

    def __reduce__(self) -> Tuple[Any, tuple]:
        return _take, self.args


class _Batch:
    """The batch on its way: unpickled as the batch itself, after which the file goes."""

    __slots__ = ("name", "obj")

    def __init__(self, name: str, obj: Any) -> None:
        self.name, self.obj = name, obj

    def __reduce__(self) -> Tuple[Any, tuple]:
        return _release, (self.name, self.obj)


_NS = pid_namespace()


def _path(name: str) -> str:
    return os.path.join(SHM_DIR, name)


def _mapping(name: str) -> mmap.mmap:
    mm = _open.get(name)
    if mm is None:
        global _atexit_for
        if _atexit_for != os.getpid():
            atexit.register(sweep_orphans)
            _atexit_for = os.getpid()
        try:
            fd = os.open(_path(name), os.O_RDONLY)
        except OSError as exc:
            raise CloudrecError(f"a DataLoader worker's batch file {_path(name)} is gone "
                                f"({exc.strerror}): was /dev/shm cleaned while it ran?") from None
        try:
            mm = _open[name] = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
    return mm


def _take(name: str, off: int, n: int, kind: str, dtype: str, shape: tuple) -> Any:
    mm = _mapping(name)
    if len(mm) < off + n:   # never a silently short payload; the batch is lost: free the file
        size = len(mm)
        _release(name, None)
        raise CloudrecError(f"a DataLoader worker's batch file {_path(name)} holds {size} "
                            f"bytes, but a payload ends at {off + n}: was it changed while "
                            f"in flight?")
    if kind == "bytes":
        return mm[off:off + n]
    if kind == "bytearray":
        return bytearray(mm[off:off + n])
    out = np.empty(shape, np.dtype(dtype))  # writable and owned, like an unpickled array
    out.reshape(-1).view(np.uint8)[:] = np.frombuffer(mm, np.uint8, n, off)
    return out


def _release(name: str, obj: Any) -> Any:
    mm = _open.pop(name, None)
    if mm is not None:
        mm.close()
    _unlink_quiet(name)
    return obj


def _large(x: Any) -> Optional[Tuple[memoryview, str, str, tuple]]:
    t = type(x)
    if t is bytes or t is bytearray:
        if len(x) >= MIN_ITEM:
            return memoryview(x), t.__name__, "", ()
    elif t is np.ndarray and x.nbytes >= MIN_ITEM and not x.dtype.hasobject:
        a = np.ascontiguousarray(x)
        return memoryview(a.reshape(-1).view(np.uint8)), "array", a.dtype.str, tuple(a.shape)
    return None


def _replace(obj: Any, name: str, found: List[memoryview], at: List[int]) -> Any:
    """``obj`` with its large objects swapped for :class:`_Ref` (their bytes in ``found``)."""
    t = type(obj)
    if t is dict:
        return {k: _replace(v, name, found, at) for k, v in obj.items()}
    if t is list or t is tuple:
        return t(_replace(v, name, found, at) for v in obj)
    big = _large(obj)
    if big is None:
        return obj
    view, kind, dtype, shape = big
    found.append(view)
    ref = _Ref(name, at[0], view.nbytes, kind, dtype, shape)
    at[0] += view.nbytes
    return ref


def _write_all(fd: int, views: List[memoryview]) -> None:
    """Every view, in order, with ``writev`` (short writes resumed)."""
    i = 0
    while i < len(views):
        group = views[i:i + _IOV_MAX]
        done = os.writev(fd, group)
        for v in group:
            if done >= v.nbytes:
                done -= v.nbytes
                i += 1
                continue
            views[i] = v[done:]
            break


def shared_payloads(obj: Any, *, in_worker: Optional[bool] = None) -> Any:
    """``obj`` ready to leave this DataLoader worker with its large payloads in shared
    memory (see the module docstring); ``obj`` itself when that does not apply.

    ``in_worker`` overrides the check for a DataLoader worker (tests)."""
    if in_worker is None:
        from torch.utils.data import get_worker_info
        in_worker = get_worker_info() is not None
    if not in_worker:
        return obj
    name = f"{PREFIX}{_NS}-{os.getpid()}-{next(_counter)}-{secrets.token_hex(4)}"
    found: List[memoryview] = []
    at = [0]
    moved = _replace(obj, name, found, at)
    if at[0] < MIN_TOTAL:
        return obj
    global _swept_in
    if _swept_in != os.getpid():
        _swept_in = os.getpid()
        sweep_orphans()
    try:
        fd = os.open(_path(name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        return obj   # no /dev/shm here (or not writable): through the pipe
    try:
        _write_all(fd, found)
    except OSError:   # ENOSPC and the like: drop the file, use the pipe
        os.close(fd)
        _unlink_quiet(name)
        return obj
    os.close(fd)
    return _Batch(name, moved)


def _unlink_quiet(name: str) -> None:
    try:
        os.unlink(_path(name))
    except OSError:
        pass


def sweep_orphans() -> int:
    """Remove batch files whose worker (in this pid namespace) has exited: batches torch
    dropped.  Returns how many."""
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return 0
    removed = 0
    for n in names:
        if not n.startswith(PREFIX):
            continue
        parts = n[len(PREFIX):].split("-")
        if len(parts) < 2 or parts[0] != _NS or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid != os.getpid() and not pid_alive(pid):
            _unlink_quiet(n)
            removed += 1
    return removed
