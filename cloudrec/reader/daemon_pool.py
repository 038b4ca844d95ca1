"""A thread pool whose threads never hold the interpreter at exit.

``concurrent.futures.ThreadPoolExecutor`` joins its threads when the
interpreter exits, so a shard download still running then (a loop stopped
early, a GET that stalls) kept the process alive until the whole shard had
arrived or its retries gave up: minutes for a big shard or a dead endpoint.
A cache download that is cut off is harmless: the entry is published by an
atomic rename only once complete, its temp file is removed by the next
download of the key, and the kernel drops its ``flock`` with the process.
:class:`DaemonPool` has the ``submit`` / ``shutdown`` surface the cache uses,
on daemon threads.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable, List, Optional, Tuple

__all__ = ["DaemonPool"]

_Job = Optional[Tuple[Future, Callable[..., Any], tuple, dict]]


class DaemonPool:
    """Up to ``max_workers`` daemon threads running submitted calls in submission order."""

    def __init__(self, max_workers: int, thread_name_prefix: str = "cloudrec-daemon") -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be >= 1")
        self._max = int(max_workers)
        self._prefix = thread_name_prefix
        self._jobs: "queue.SimpleQueue[_Job]" = queue.SimpleQueue()
        self._threads: List[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._shutdown = False

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        """Run ``fn(*args, **kwargs)`` on a pool thread; its Future, cancellable until it starts."""
        fut: Future = Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._jobs.put((fut, fn, args, kwargs))
            if self._idle == 0 and len(self._threads) < self._max:
                t = threading.Thread(target=self._work, daemon=True,
                                     name=f"{self._prefix}_{len(self._threads)}")
                self._threads.append(t)
                t.start()
            else:
                self._idle = max(0, self._idle - 1)   # a waiting thread takes this job
        return fut

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fut, fn, args, kwargs = job
            if fut.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:  # noqa: BLE001 - handed to the Future's owner
                    fut.set_exception(exc)
                else:
                    fut.set_result(result)
                del fut, fn, args, kwargs, job
            with self._lock:
                self._idle += 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new jobs; ``cancel_futures`` cancels those not started; ``wait`` joins the threads
        (running jobs finish first)."""
        with self._lock:
            if not self._shutdown:
                self._shutdown = True
                if cancel_futures:
                    while True:
                        try:
                            job = self._jobs.get_nowait()
                        except queue.Empty:
                            break
                        if job is not None:
                            job[0].cancel()
                for _ in self._threads:
                    self._jobs.put(None)
            threads = list(self._threads)
        if wait:
            for t in threads:
                if t is not threading.current_thread():
                    t.join()
