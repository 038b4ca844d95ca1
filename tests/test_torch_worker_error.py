"""The worker processes of cloudrec's loaders.  A decode error in a DataLoader worker
stops the loader's workers at once when it leaves ResumableLoader / ResumableMapLoader
(cloudrec.torch_loader_exit): torch keeps the failed iterator in a reference cycle, and
when the cyclic collector frees it later its queues are already shut, so each worker is
waited for 5 s and then killed.  Persistent workers survive an early stop, and
ResumableMapLoader keeps them from one pass to the next."""
from __future__ import annotations

import gc
import multiprocessing as mp

import pytest

torch = pytest.importorskip("torch")

from cloudrec.dataset import open_dataset  # noqa: E402
from cloudrec.dataset.synthetic import write_synthetic  # noqa: E402
from cloudrec.torch import RecordIterableDataset, ResumableLoader  # noqa: E402
from cloudrec.torch_loader_exit import batches  # noqa: E402


class _Boom(ValueError):
    pass


def _decode_failing_on(bad_len):
    def decode(payload: bytes) -> int:
        if len(payload) == bad_len:
            raise _Boom("this record cannot be decoded")
        return len(payload)
    return decode


def _workers():
    return [p for p in mp.active_children() if p.is_alive()]


@pytest.fixture
def dataset(tmp_path):
    urls, truth = write_synthetic(str(tmp_path), 2, 300, min_size=100, max_size=5000, seed=9)
    ds = open_dataset(urls)
    return ds, int(ds.table.length[437])


def test_resumable_loader_stops_its_workers_when_a_worker_fails(dataset):
    gc.collect()
    assert _workers() == []
    ds, bad_len = dataset
    rds = RecordIterableDataset(ds, decode=_decode_failing_on(bad_len), batch_size=8,
                                mode="global", seed=1)
    loader = ResumableLoader(rds, num_workers=2, multiprocessing_context="fork")
    gc.disable()   # no collection may free the failed iterator behind the test's back
    try:
        seen = 0
        with pytest.raises(_Boom, match="cannot be decoded"):
            for b in loader:
                seen += len(b["ids"])
        assert 0 < seen < len(ds)
        assert _workers() == []    # stopped before the error reached this frame
    finally:
        gc.enable()


def test_batches_leaves_a_clean_loop_and_an_early_stop_to_torch(dataset):
    ds, _ = dataset
    rds = RecordIterableDataset(ds, decode=len, batch_size=50, mode="none")
    dl = torch.utils.data.DataLoader(rds, batch_size=None, num_workers=2,
                                     multiprocessing_context="fork")
    ids = [i for b in batches(dl) for i in b["ids"].tolist()]
    assert sorted(ids) == list(range(len(ds)))
    gen = batches(dl)
    next(gen)
    assert len(_workers()) == 2
    gen.close()    # the caller stopped early: the iterator is freed and stops its workers
    assert _workers() == []


def test_persistent_workers_survive_an_early_stop(dataset):
    ds, _ = dataset
    rds = RecordIterableDataset(ds, decode=len, batch_size=50, mode="none")
    loader = ResumableLoader(rds, num_workers=2, persistent_workers=True,
                             multiprocessing_context="fork")
    for b in loader:
        break
    assert len(_workers()) == 2    # kept for the next pass over the loader
    rest = [i for b in loader for i in b["ids"].tolist()]
    assert len(rest) == len(ds) - 50


def _pid(payload: bytes) -> int:
    import os
    return os.getpid()


def test_a_map_loader_keeps_its_persistent_workers_and_resumes_exactly(tmp_path):
    """ResumableMapLoader with persistent_workers: the same worker processes serve every
    pass (they were forked anew each epoch), and a restored state still gives the exact
    next batch."""
    from cloudrec.torch import IndexedRecordDataset, ResumableMapLoader
    urls, _ = write_synthetic(str(tmp_path), 1, 60, min_size=10, max_size=300, seed=2)
    ds = IndexedRecordDataset(urls[0][:-4] + ".idx", urls[0], transform=_pid)
    kw = dict(batch_size=6, seed=4, mode="global")
    loader = ResumableMapLoader(ds, loader_kw={"num_workers": 2, "persistent_workers": True,
                                               "multiprocessing_context": "fork"}, **kw)
    pids, epochs = set(), []
    for _ in range(2):
        ids = []
        for b in loader:
            pids.update(b["data"].tolist())
            ids += b["ids"].tolist()
        epochs.append(ids)
    assert len(pids) == 2 and sorted(epochs[0]) == sorted(epochs[1]) == list(range(60))
    assert epochs[0] != epochs[1]                     # a new order for the second epoch
    plain = ResumableMapLoader(ds, **kw)              # no workers: the reference order
    plain.set_epoch(2)
    truth = [b["ids"].tolist() for b in plain]
    loader.set_epoch(2)
    it = iter(loader)
    first = [next(it)["ids"].tolist() for _ in range(3)]
    state = loader.state_dict()
    del it
    loader.load_state_dict(state)
    rest = [b["ids"].tolist() for b in loader]
    assert first + rest == truth
    for b in loader:   # the next epoch, on the same two processes
        pids.update(b["data"].tolist())
    assert len(pids) == 2
