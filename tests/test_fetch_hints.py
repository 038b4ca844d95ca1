"""RecordFetcher with an EpochSlice's hints reads every byte once (issue #13.1).

Without the hint the fetcher merges gaps of up to ``max_gap`` bytes, and those
gaps hold the records of a neighbouring worker's shuffle windows, or of this
worker's later look-ahead windows, so the same bytes were fetched two or
three times.  With them the windows hold whole shuffle windows and merge
only records that touch.  Counted by the fetcher here (local shards) and at the
loopback S3 proxy for DataLoader workers.
"""
from __future__ import annotations

import numpy as np
import pytest

from cloudrec.dataset import open_dataset
from cloudrec.dataset.synthetic import write_synthetic
from cloudrec.reader.fetch import RecordFetcher
from cloudrec.reader.planner import plan_ranges, plan_split
from cloudrec.reader.sampler import EpochSampler

ORDERS = {"block": {"block_size": 12, "window_blocks": 4},
          "shard": {"buffer_size": 60}}


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    base = tmp_path_factory.mktemp("hints")
    urls, _ = write_synthetic(str(base), 5, 180, min_size=4000, max_size=30000, seed=2,
                              magic_every=0)
    return open_dataset(urls)


def _epoch(ds, mode, world, workers, hints, **fetch):
    """(ids read per worker, bytes moved, bytes of the records read) of one epoch."""
    read, moved, need = [], 0, 0
    for rank in range(world):
        s = EpochSampler(ds.table, seed=3, mode=mode, rank=rank, world_size=world, batch_size=16,
                         order_options=ORDERS[mode])
        for k in range(workers):
            sl = s.epoch_slice(k, workers)
            kw = {"chunk_starts": sl.chunk_starts,
                  "touching_only": sl.exclusive is not None} if hints else {}
            with RecordFetcher(ds, window_bytes=300_000, **fetch) as f:
                got = [rid for rid, _ in f.fetch(sl.ids, **kw)]
                moved += f.bytes_requested
            assert got == sl.ids.tolist()
            read.append(got)
            need += int(ds.table.length[sl.ids].sum())
    return read, moved, need


@pytest.mark.parametrize("mode", sorted(ORDERS))
@pytest.mark.parametrize("world,workers", [(1, 1), (1, 2), (2, 3), (1, 8), (3, 2)])
def test_hints_read_every_byte_once(ds, mode, world, workers):
    read, moved, need = _epoch(ds, mode, world, workers, hints=True)
    flat = [i for r in read for i in r]
    assert set(flat) == set(range(len(ds)))             # exactly once, pads aside
    assert len(flat) - len(set(flat)) < world * 16       # only the last batch of a rank pads
    assert moved <= 1.02 * need, (moved, need)


def test_without_hints_bytes_are_moved_twice(ds):
    """The measurement that makes the hints necessary (and shows the test can fail)."""
    _, moved, need = _epoch(ds, "block", 1, 3, hints=False)
    assert moved > 1.2 * need


def test_hints_keep_requests_few(ds):
    """Reading each byte once must not turn into one GET per record."""
    with RecordFetcher(ds, window_bytes=300_000) as f:
        sl = EpochSampler(ds.table, seed=3, mode="block", batch_size=16,
                          order_options=ORDERS["block"]).epoch_slice(0, 2)
        list(f.fetch(sl.ids, chunk_starts=sl.chunk_starts, touching_only=True))
        assert f.requests < len(sl.ids) / 4


def test_plan_split_merges_flagged_records_only_when_touching():
    shard = np.zeros(5, np.int64)
    off = np.array([0, 100, 250, 400, 410])
    length = np.array([100, 50, 50, 10, 10])          # 0-100, 100-150, 250-300, 400-410, 410-420
    shared = np.array([False, False, True, True, True])
    p = plan_split(shard, off, length, shared, max_gap=1000)
    spans = sorted(zip(p.start.tolist(), p.end.tolist()))
    assert spans == [(0, 150), (250, 300), (400, 420)]
    # every record is found at its own bytes
    for k in range(5):
        assert p.start[p.record_request[k]] + p.record_pos[k] == off[k]
    whole = plan_ranges(shard, off, length, max_gap=1000)
    assert len(whole) == 1 and whole.nbytes == 420    # without the split: one 420-byte read


@pytest.mark.s3
def test_dataloader_workers_move_each_byte_once_through_the_proxy(s3_server, fault_proxy):
    """Two DataLoader workers, block order, no cache: bytes counted at the proxy
    (blocks of ~200 KB, smaller than the 256 KB max_gap: gap merging would read the
    blocks between a window's blocks too)."""
    torch_data = pytest.importorskip("torch.utils.data")
    from cloudrec.torch import RecordIterableDataset

    bucket = s3_server.new_bucket()
    urls, _ = write_synthetic(bucket, 4, 150, min_size=4000, max_size=30000, seed=5,
                              magic_every=0, storage_options=s3_server.storage_options)
    so = fault_proxy.storage_options
    ds = RecordIterableDataset(urls, decode=bytes, collate=list, storage_options=so,
                               batch_size=16, seed=1, mode="block",
                               order_options=ORDERS["block"],
                               fetch_options={"window_bytes": 300_000})
    fault_proxy.configure()
    ids = []
    loader = torch_data.DataLoader(ds, batch_size=None, num_workers=2,
                                   multiprocessing_context="fork")
    for b in loader:
        ids += [i for i, p in zip(b["ids"].tolist(), b["is_pad"].tolist()) if not p]
    assert sorted(ids) == list(range(len(ds.source)))
    got = fault_proxy.traffic()["GET .rec"]
    dataset_bytes = int(ds.source.table.length.sum())
    assert got["bytes"] <= 1.02 * dataset_bytes, (got, dataset_bytes)


def test_a_shuffle_window_far_larger_than_a_fetch_window_is_cut_by_bytes(ds):
    """A shard-order buffer larger than the read-ahead must not become one window held in
    memory whole."""
    sl = EpochSampler(ds.table, seed=3, mode="shard", batch_size=16,
                      order_options={"buffer_size": 400}).epoch_slice(0, 1)
    assert int(ds.table.length[sl.ids[:400]].sum()) > 2_000_000
    with RecordFetcher(ds, window_bytes=300_000, readahead_bytes=1_200_000) as f:
        wins = list(f._windows(sl.ids, sl.chunk_starts))
        assert np.concatenate(wins).tolist() == sl.ids.tolist()
        biggest = max(int(ds.table.length[w].sum()) for w in wins)
        assert biggest <= 300_000 + int(ds.table.length.max())
        got = [rid for rid, _ in f.fetch(sl.ids, chunk_starts=sl.chunk_starts,
                                         touching_only=True)]
        assert got == sl.ids.tolist()
        assert f.bytes_requested == int(ds.table.length[sl.ids].sum())  # touching only
