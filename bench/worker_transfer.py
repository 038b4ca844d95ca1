"""How a batch leaves a DataLoader worker: small arrays as torch tensors or by value, payloads
through the pipe or /dev/shm.

    python bench/worker_transfer.py [--batches 150] [--rounds 3] [--busy 1]

Each of 2 forked DataLoader workers yields ``--batches`` batches like
``RecordIterableDataset``'s: 64 distinct payloads of 60 KB, 64 ids (int64) and 64 pad
flags (bool), while ``--busy`` threads of its own run Python code (a cache
download or decode threads in a real worker; 0 for an idle worker).  The ids
and flags travel as

* ``tensors``: two torch tensors (torch's default: shared memory, a file
  descriptor per tensor handed over by the worker's resource-sharer thread);
* ``by value``: :func:`cloudrec.torch_transfer.small_tensor` (pickled bytes,
  rebuilt as tensors in the main process);
* ``by value + shm``: the same, and the payloads written to one /dev/shm file by
  :func:`cloudrec.torch_shm.shared_payloads` instead of pickled into the pipe;

alternated per round, with no busy thread and with ``--busy``; the median ms per
batch and the ratios are printed and written to bench/results/worker_transfer.json.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from typing import Any, Dict, List

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _common import figure, write_result  # noqa: E402


def _spin(stop: threading.Event) -> None:
    x = 0
    while not stop.is_set():
        for i in range(1000):
            x += i


def make_dataset(kind: str, batches: int, busy: int):
    import torch
    import torch.utils.data as tud

    from cloudrec.torch_shm import shared_payloads
    from cloudrec.torch_transfer import small_tensor

    class Batches(tud.IterableDataset):
        def __iter__(self):
            stop = threading.Event()
            for _ in range(busy):
                threading.Thread(target=_spin, args=(stop,), daemon=True).start()
            # 64 distinct objects: one object repeated would cross the pipe once (pickle's memo)
            payload = [(1, os.urandom(60_000)) for _ in range(64)]
            try:
                for i in range(batches):
                    ids = np.arange(64, dtype=np.int64) + 64 * i
                    pad = np.zeros(64, bool)
                    if kind == "tensors":
                        yield {"data": payload, "ids": torch.from_numpy(ids),
                               "is_pad": torch.from_numpy(pad)}
                    elif kind == "by value":
                        yield {"data": payload, "ids": small_tensor(ids), "is_pad": small_tensor(pad)}
                    else:   # + the payloads through /dev/shm, as RecordIterableDataset sends them
                        yield {"data": shared_payloads(payload), "ids": small_tensor(ids),
                               "is_pad": small_tensor(pad)}
            finally:
                stop.set()
    return Batches()


def one_run(kind: str, batches: int, busy: int) -> float:
    import torch
    import torch.utils.data as tud
    loader = tud.DataLoader(make_dataset(kind, batches, busy), batch_size=None, num_workers=2,
                            multiprocessing_context="fork")
    t0 = time.perf_counter()
    seen: List[int] = []
    for b in loader:
        assert isinstance(b["ids"], torch.Tensor) and b["ids"].dtype == torch.int64
        assert len(b["data"]) == 64 and type(b["data"][5][1]) is bytes and len(b["data"][5][1]) == 60_000
        seen.append(int(b["ids"][0]))
    secs = time.perf_counter() - t0
    if sorted(seen) != sorted([64 * i for i in range(batches)] * 2):   # each worker, every batch
        raise SystemExit(f"{kind}: {len(seen)} batches, not each worker's {batches} once")
    return secs / len(seen) * 1e3


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=150, help="batches per worker")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--busy", type=int, default=1, help="Python threads busy in each worker")
    a = ap.parse_args(argv)
    levels = sorted({0, a.busy})
    runs: Dict[str, List[float]] = {}
    for r in range(a.rounds):
        for busy in levels:
            order = ["tensors", "by value", "by value + shm"]
            order = order if r % 2 == 0 else order[::-1]
            for kind in order:
                runs.setdefault(f"{kind}, busy {busy}", []).append(one_run(kind, a.batches, busy))
        print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.2f} ms/batch" for k, v in runs.items()),
              flush=True)
    med = {k: statistics.median(v) for k, v in runs.items()}
    figs = []
    for busy in levels:
        t, v = med[f"tensors, busy {busy}"], med[f"by value, busy {busy}"]
        m = med[f"by value + shm, busy {busy}"]
        print(f"{busy} busy thread(s) per worker: tensors {t:.2f} ms/batch, by value {v:.2f}: "
              f"{t / v:.1f}x; + payloads by /dev/shm {m:.2f}: {v / m:.1f}x by value's speed")
        figs += [figure(f"{busy} busy thread(s): ids + pad flags as torch tensors", round(t, 2),
                        "ms/batch"),
                 figure(f"{busy} busy thread(s): by value", round(v, 2), "ms/batch"),
                 figure(f"{busy} busy thread(s): by value vs tensors", round(t / v, 2), "x"),
                 figure(f"{busy} busy thread(s): by value + payloads by /dev/shm", round(m, 2),
                        "ms/batch"),
                 figure(f"{busy} busy thread(s): payloads by /dev/shm vs through the pipe",
                        round(v / m, 2), "x")]
    write_result("worker_transfer",
                 {"batches_per_worker": a.batches, "rounds": a.rounds, "busy_threads": levels,
                  "workers": 2, "payloads": "64 distinct x 60 KB", "small arrays": "64 int64 + 64 bool"},
                 {"ms_per_batch": runs, "median_ms_per_batch": med}, figs,
                 title="a batch leaving 2 DataLoader workers: ids and pad flags as torch tensors "
                       "vs by value, payloads through the pipe vs /dev/shm, idle workers and "
                       "workers with a busy Python thread")
    return 0


if __name__ == "__main__":
    sys.exit(main())
