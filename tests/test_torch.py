"""cloudrec.torch: DataLoader workers see every record exactly once, right bytes, resumable."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cloudrec.dataset import open_dataset  # noqa: E402
from cloudrec.errors import ConfigError  # noqa: E402
from cloudrec.format.irheader import IRHeader  # noqa: E402
from cloudrec.reader.orders import epoch_order  # noqa: E402
from cloudrec.reader.sampler import EpochSampler  # noqa: E402
from cloudrec.recordio import MXIndexedRecordIO, pack_img  # noqa: E402
from cloudrec.torch import (IndexedRecordDataset, RecordIterableDataset, ResumableLoader,  # noqa: E402
                            _to_tensor, collate_numpy)


def colour(uid: int) -> np.ndarray:
    """A distinct BGR colour per record, far apart enough to survive JPEG."""
    return np.array([(uid * 37) % 200 + 20, (uid * 11) % 200 + 20, (uid * 5) % 200 + 20], np.uint8)


def write_image_dataset(prefix: str, n: int, shards: int, storage_options=None, size: int = 8) -> list:
    """``shards`` shards ``prefix-000i.rec/.idx`` of ``n`` tiny JPEGs; key = uid, label = [uid % 5, uid]."""
    urls = []
    per = -(-n // shards)
    for s in range(shards):
        rec, idx = f"{prefix}-{s:04d}.rec", f"{prefix}-{s:04d}.idx"
        with MXIndexedRecordIO(idx, rec, "w", storage_options=storage_options) as w:
            for uid in range(s * per, min(n, (s + 1) * per)):
                img = np.empty((size, size, 3), np.uint8)
                img[:] = colour(uid)
                w.write_idx(uid, pack_img(IRHeader(2, np.array([uid % 5, uid], np.float32), uid, 0), img))
        urls.append(rec)
    return urls


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("torchds")
    urls = write_image_dataset(str(d / "train"), 45, 3)
    return open_dataset(urls)


def check_batch(ds, batch, batch_size):
    img, label = batch["data"]
    assert img.shape == (batch_size, 8, 8, 3) and img.dtype == torch.uint8
    assert label.shape == (batch_size, 2) and label.dtype == torch.float32
    keys = ds.table.key[batch["ids"].numpy()]
    assert np.array_equal(label[:, 1].numpy().astype(np.int64), keys)     # the right record's bytes
    want_rgb = np.stack([colour(int(k))[::-1] for k in keys]).astype(int)
    assert np.abs(img.numpy()[:, 4, 4, :].astype(int) - want_rgb).max() <= 8


def layout_ids(table, workers, consumed=0, epoch=0, **sampler_kw):
    """Real ids one rank yields from ``consumed`` on, as a DataLoader polling ``workers``
    workers round-robin gets them (each worker reads its own contiguous span)."""
    k = max(1, workers)
    s = EpochSampler(table, epoch=epoch, **sampler_kw)
    s.consumed = consumed
    slices = [s.epoch_slice(w, k) for w in range(k)]
    out = []
    for _, w, i in sorted((st, w, i) for w, sl in enumerate(slices) for i, st in enumerate(sl.steps.tolist())):
        ids, pad = slices[w].batch(i)
        out.extend(ids[~pad].tolist())
    return out


def real_ids(batches):
    out = []
    for b in batches:
        out.extend(b["ids"][~b["is_pad"]].tolist())
    return out


def test_workers_cover_the_epoch_exactly_once_with_persistent_workers(dataset):
    rds = RecordIterableDataset(dataset, seed=3, mode="block", batch_size=4,
                                order_options={"block_size": 4}, rank=0, world_size=1)
    loader = ResumableLoader(rds, num_workers=2, persistent_workers=True)
    epochs = []
    for e in range(2):
        batches = list(loader)
        assert len(batches) == 12            # ceil(45 / 4)
        for b in batches:
            check_batch(dataset, b, 4)
        ids = real_ids(batches)
        assert Counter(ids) == Counter(range(45))
        assert sum(int(b["is_pad"].sum()) for b in batches) == 3
        # DataLoader's round-robin over workers gives back the sampler's layout for 2 workers
        assert ids == layout_ids(dataset.table, 2, epoch=e, seed=3, mode="block", batch_size=4,
                                 order_options={"block_size": 4})
        assert ids != epoch_order(dataset.table, 3, e, "block", block_size=4).tolist()
        epochs.append(ids)
    assert epochs[0] != epochs[1] and rds.state_dict()["epoch"] == 2


def test_two_ranks_times_two_workers_are_disjoint_and_complete(dataset):
    seen = Counter()
    counts = []
    for rank in range(2):
        rds = RecordIterableDataset(dataset, seed=9, batch_size=5, rank=rank, world_size=2, last="pad")
        batches = list(ResumableLoader(rds, num_workers=2))
        counts.append(len(batches))
        seen.update(real_ids(batches))
    assert counts == [5, 5] and seen == Counter(range(45))


def test_resume_with_other_worker_count_and_on_persistent_workers(dataset):
    kw = dict(seed=1, batch_size=3, rank=0, world_size=1)
    whole = real_ids(list(ResumableLoader(RecordIterableDataset(dataset, **kw), num_workers=0)))
    rds = RecordIterableDataset(dataset, **kw)
    loader = ResumableLoader(rds, num_workers=2, persistent_workers=True)
    first = []
    for i, b in enumerate(loader):
        first.append(b)
        if i == 4:
            break
    state = rds.state_dict()
    assert state["consumed"] == 15 and state["epoch"] == 0
    # a fresh loader with one worker resumes at the next batch
    rds2 = RecordIterableDataset(dataset, **kw)
    rds2.load_state_dict(state)
    rest = list(ResumableLoader(rds2, num_workers=1))
    two = layout_ids(dataset.table, 2, **kw)
    assert real_ids(first) == two[:15] and whole == layout_ids(dataset.table, 0, **kw)
    assert sorted(real_ids(first) + real_ids(rest)) == list(range(45))     # the rest, once
    # the same persistent-worker loader, rewound to batch 2 of epoch 0, follows the restored state
    rds.load_state_dict({**state, "consumed": 6})
    again = list(loader)
    assert real_ids(again) == two[6:]


def test_zero_copy_tensors_and_collate():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = _to_tensor(a)
    a[0, 0] = 99
    assert t[0, 0].item() == 99
    out = collate_numpy([(np.ones((2, 2), np.uint8), np.float32(1)), (np.zeros((2, 2), np.uint8), np.float32(2))])
    assert out[0].shape == (2, 2, 2) and out[1].tolist() == [1.0, 2.0]


def test_map_style_dataset_over_mxindexedrecordio(dataset, tmp_path):
    urls = write_image_dataset(str(tmp_path / "legacy"), 23, 1)
    mds = IndexedRecordDataset(urls[0][:-4] + ".idx", urls[0])
    assert len(mds) == 23
    loader = torch.utils.data.DataLoader(mds, batch_size=5, num_workers=2, persistent_workers=True)
    labels = torch.cat([lab for _, lab in loader])
    assert labels[:, 1].tolist() == list(range(23))
    img, lab = mds[7]
    assert img.shape == (8, 8, 3) and abs(int(img[4, 4, 0]) - int(colour(7)[2])) <= 8
    with pytest.raises(IndexError):
        mds[23]


def test_loader_rejects_a_batch_size(dataset):
    with pytest.raises(ConfigError):
        ResumableLoader(RecordIterableDataset(dataset, batch_size=2), batch_size=4)


def test_spawned_persistent_workers_follow_a_restored_state(dataset):
    rds = RecordIterableDataset(dataset, seed=2, batch_size=4, rank=0, world_size=1)
    whole = layout_ids(dataset.table, 2, seed=2, batch_size=4, rank=0, world_size=1)
    loader = ResumableLoader(rds, num_workers=2, multiprocessing_context="spawn", persistent_workers=True)
    it = iter(loader)
    got = [next(it), next(it)]
    del it
    assert real_ids(got) == whole[:8]
    rds.load_state_dict({**rds.state_dict(), "consumed": 4})   # rewind to after batch 1
    rest = list(loader)
    assert real_ids(rest) == whole[4:]
    for b in rest:
        check_batch(dataset, b, 4)


@pytest.mark.s3
def test_both_datasets_read_from_loopback_s3_in_workers(s3_server):
    bucket = s3_server.new_bucket()
    so = s3_server.storage_options
    urls = write_image_dataset(f"{bucket}/tr", 30, 2, storage_options=so)
    ds = open_dataset(urls, storage_options=so)
    rds = RecordIterableDataset(ds, seed=4, mode="shard", batch_size=4, rank=1, world_size=2)
    batches = list(ResumableLoader(rds, num_workers=2))
    for b in batches:
        check_batch(ds, b, 4)
    other = RecordIterableDataset(ds, seed=4, mode="shard", batch_size=4, rank=0, world_size=2)
    ids = real_ids(batches) + real_ids(list(ResumableLoader(other, num_workers=0)))
    assert sorted(ids) == list(range(30))
    mds = IndexedRecordDataset(urls[1][:-4] + ".idx", urls[1], storage_options=so)
    labels = torch.cat([lab for _, lab in torch.utils.data.DataLoader(mds, batch_size=4, num_workers=2)])
    assert labels[:, 1].tolist() == list(range(15, 30))


def test_small_arrays_leave_a_worker_by_value_and_arrive_as_tensors(monkeypatch):
    """In a DataLoader worker a small array is pickled as its bytes (no shared-memory file
    descriptor to hand over) and unpickled as the same tensor; a large one, and any array
    outside a worker, stays a tensor (zero copy)."""
    import pickle
    from multiprocessing.reduction import ForkingPickler

    import torch.multiprocessing  # noqa: F401 - registers torch's shared-memory reducers

    import cloudrec.torch_transfer as tt
    ids = np.arange(64, dtype=np.int64) * 7
    pad = np.zeros(64, bool)
    pad[-3:] = True
    assert isinstance(tt.small_tensor(ids), torch.Tensor)        # main process: a tensor now
    monkeypatch.setattr(tt, "get_worker_info", lambda: object())   # as in a worker
    big = np.ones(tt.BY_VALUE_BYTES // 4 + 1, np.float32)
    assert isinstance(tt.small_tensor(big), torch.Tensor)
    # a tensor goes through shared memory (a file descriptor to hand over) ...
    assert b"rebuild_storage" in bytes(ForkingPickler.dumps(torch.from_numpy(ids.copy())))
    # ... the wrapped array in the pickle itself
    blob = ForkingPickler.dumps({"ids": tt.small_tensor(ids), "is_pad": tt.small_tensor(pad),
                                 "data": tt.by_value((torch.ones(4), [torch.zeros(2, 2)]))})
    assert b"rebuild_storage" not in bytes(blob)
    got = pickle.loads(blob)
    assert got["ids"].dtype == torch.int64 and got["ids"].tolist() == ids.tolist()
    assert got["is_pad"].dtype == torch.bool and got["is_pad"].tolist() == pad.tolist()
    got["ids"][0] = 5   # a writable tensor of its own
    assert ids[0] == 0
    assert got["data"][0].tolist() == [1.0] * 4 and got["data"][1][0].shape == (2, 2)
    # what cannot travel as plain bytes stays as it was: sparse, needing grad, a transposed view
    sparse, grad = torch.eye(3).to_sparse(), torch.ones(3, requires_grad=True)
    kept = tt.by_value({"s": sparse, "g": grad, "t": torch.arange(6.0).reshape(2, 3).t()})
    assert kept["s"] is sparse and kept["g"] is grad
    assert pickle.loads(ForkingPickler.dumps(kept["t"])).tolist() == [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]


def test_worker_batches_hold_tensors_of_the_right_values(dataset):
    """Through 2 forked workers: ids, is_pad and the collated labels are tensors with the
    dtypes and values a main-process iteration gives."""
    kw = dict(seed=1, mode="global", batch_size=8, rank=0, world_size=1)
    here = list(ResumableLoader(RecordIterableDataset(dataset, **kw), num_workers=0))
    there = list(ResumableLoader(RecordIterableDataset(dataset, **kw), num_workers=2,
                                 multiprocessing_context="fork"))
    assert sorted(int(i) for b in there for i in b["ids"][~b["is_pad"]]) == list(range(45))
    for b in there:
        assert isinstance(b["ids"], torch.Tensor) and b["ids"].dtype == here[0]["ids"].dtype
        assert isinstance(b["is_pad"], torch.Tensor) and b["is_pad"].dtype == torch.bool
        check_batch(dataset, b, 8)
    assert {tuple(b["ids"].tolist()) for b in here} == {tuple(b["ids"].tolist()) for b in there}
