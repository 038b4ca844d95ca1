"""ImageRecordDataset: ImageRecordIter's pipeline under a DataLoader, ranks x workers."""
from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")  # the optional torch extra; CI installs it

from torch.utils.data import DataLoader  # noqa: E402

from cloudrec.format import unpack  # noqa: E402
from cloudrec.recordio import MXRecordIO  # noqa: E402
from cloudrec.torch import ImageRecordDataset  # noqa: E402

FIX = Path(__file__).parent / "fixtures" / "mxnet" / "pack" / "uniq"   # label == record index
KW = dict(path_imgrec=str(FIX / "uniq.rec"), path_imgidx=str(FIX / "uniq.idx"),
          data_shape=(3, 32, 32), resize=36, batch_size=4, shuffle=True, seed=1,
          preprocess_threads=1, prefetch_buffer=1)


with MXRecordIO(KW["path_imgrec"], "r") as _r:
    LABEL_OF_RECORD = [int(unpack(p)[0].label) for p in _r]  # record id (file position) -> label


def _epoch(rank: int, world: int, workers: int, epoch: int):
    ds = ImageRecordDataset(rank=rank, world_size=world, **KW)
    ds.set_epoch(epoch)
    loader = DataLoader(ds, batch_size=None, num_workers=workers,
                        multiprocessing_context="spawn" if workers else None)
    labels, pads, counts = [], 0, 0
    for b in loader:
        assert b["data"].shape == (4, 3, 32, 32) and b["data"].dtype == torch.float32
        n = 4 - b["pad"]
        labels += b["label"][:n].int().tolist()
        # index holds record ids: each names the record whose label came with it
        assert [LABEL_OF_RECORD[i] for i in b["index"][:n].tolist()] == \
            b["label"][:n].int().tolist()
        pads += b["pad"]
        counts += 1
    return labels, pads, counts


def test_ranks_and_workers_cover_the_dataset_once_with_equal_counts():
    seen, counts = [], set()
    for rank in range(2):
        labels, _pads, n = _epoch(rank, 2, 2, epoch=0)
        seen += labels
        counts.add(n)
    assert sorted(seen) == list(range(24))   # 24 records, each exactly once
    assert len(counts) == 1                  # every rank the same number of batches


def test_epochs_shuffle_differently_and_repeat_with_the_seed():
    a, _, _ = _epoch(0, 1, 0, epoch=0)
    b, _, _ = _epoch(0, 1, 0, epoch=1)
    a2, _, _ = _epoch(0, 1, 0, epoch=0)
    assert sorted(a) == sorted(b) == list(range(24))
    assert a != b and a == a2


def test_a_worker_decodes_only_the_records_it_yields(monkeypatch):
    """The worker's iterator starts at the dataset's state: nothing is decoded for the
    position its constructor would otherwise have started at (epoch 0); besides the epoch's
    records, at most the next epoch's first batch is built ahead."""
    from cloudrec.iterators.record_sample import RecordSampleWriter
    decoded = []
    inner = RecordSampleWriter._process_inner

    def counting(self, payload, rid, slot, buf):
        decoded.append((buf.plan.epoch, int(rid)))
        return inner(self, payload, rid, slot, buf)
    monkeypatch.setattr(RecordSampleWriter, "_process_inner", counting)
    ds = ImageRecordDataset(**KW)
    ds.set_epoch(3)
    ids = []
    for b in DataLoader(ds, batch_size=None, num_workers=0):
        ids += b["index"][:4 - b["pad"]].tolist()
    ds.close()
    assert sorted(ids) == list(range(24))
    assert sorted(r for e, r in decoded if e == 3) == sorted(ids)  # each once
    assert {e for e, _ in decoded} <= {3, 4} and sum(e == 4 for e, _ in decoded) <= 4


def test_epochs_reuse_the_worker_iterator_and_match_fresh_datasets():
    """In one process the dataset keeps its worker iterator between epochs (threads, buffers,
    the next epoch built ahead); every epoch equals that of a freshly made dataset."""
    from cloudrec.torch import ResumableLoader
    from cloudrec.torch_images import _WORKER_ITERS

    def values(loader):
        return [(b["data"].clone(), b["label"].clone(), b["index"].clone()) for b in loader]
    ds = ImageRecordDataset(**KW)
    loader = ResumableLoader(ds, num_workers=0)
    got, iters = [], []
    for _ in range(3):
        got.append(values(loader))
        iters.append(_WORKER_ITERS[ds][1])
    assert iters[0] is iters[1] is iters[2]
    for e in range(3):
        fresh = ImageRecordDataset(**KW)
        fresh.set_epoch(e)
        want = values(ResumableLoader(fresh, num_workers=0))
        fresh.close()
        assert len(want) == len(got[e]) == 6
        for (a, la, ia), (b, lb, ib) in zip(got[e], want):
            assert torch.equal(a, b) and torch.equal(la, lb) and torch.equal(ia, ib)
    it = iters[0]
    ds.close()
    assert it._closed and ds not in _WORKER_ITERS
