"""Issue #13 item 3: open_dataset fetches every `.idx` concurrently (bounded), overlapping
the shards' ``info`` calls, and the concurrent result equals the serial one (loopback S3)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import cloudrec.dataset as dataset_mod
from cloudrec.dataset import open_dataset
from cloudrec.dataset.synthetic import write_synthetic

N_SHARDS = 48


class _InFlight:
    """Wraps read_idx_url and records how many calls ran at once."""

    def __init__(self, real):
        self.real, self.now, self.peak, self.calls = real, 0, 0, 0
        self.lock = threading.Lock()

    def __call__(self, *a, **kw):
        with self.lock:
            self.now += 1
            self.calls += 1
            self.peak = max(self.peak, self.now)
        try:
            return self.real(*a, **kw)
        finally:
            with self.lock:
                self.now -= 1


@pytest.mark.s3
def test_many_small_shards_open_concurrently_and_equal_the_serial_open(s3_server, monkeypatch):
    so = s3_server.storage_options
    bucket = s3_server.new_bucket()
    urls, truth = write_synthetic(bucket + "/ds", N_SHARDS, 5, max_size=300, seed=3,
                                  storage_options=so)
    pattern = bucket + "/ds/train-{0000..%04d}.rec" % (N_SHARDS - 1)
    serial_probe = _InFlight(dataset_mod.read_idx_url)
    monkeypatch.setattr(dataset_mod, "read_idx_url", serial_probe)
    serial = open_dataset(pattern, storage_options=so, concurrency=1)
    probe = _InFlight(dataset_mod.read_idx_url.real)
    monkeypatch.setattr(dataset_mod, "read_idx_url", probe)
    conc = open_dataset(pattern, storage_options=so, concurrency=16)
    assert serial_probe.peak == 1 and serial_probe.calls == N_SHARDS
    assert probe.calls == N_SHARDS and 1 < probe.peak <= 16  # bounded, and really parallel
    assert [s.rec_url for s in conc.shards] == urls == [s.rec_url for s in serial.shards]
    assert [(s.size, s.version) for s in conc.shards] == [(s.size, s.version)
                                                           for s in serial.shards]
    for col in ("shard", "key", "offset", "length"):
        assert np.array_equal(getattr(conc.table, col), getattr(serial.table, col)), col
    assert len(conc) == len(truth) == N_SHARDS * 5
    assert set(conc.open_seconds) == {"fetch", "parse", "total"}
    assert conc.open_seconds["total"] >= conc.open_seconds["fetch"] > 0
    # the table points at the right bytes: spot-check one record per shard
    from cloudrec.reader.fetch import RecordFetcher
    ids = conc.shard_starts[:-1].tolist()
    f = RecordFetcher(conc)
    try:
        for rid, payload in f.fetch(ids):
            assert payload == truth[(int(conc.table.shard[rid]), int(conc.table.key[rid]))]
    finally:
        f.close()


def test_a_failing_idx_read_among_many_names_its_shard(tmp_path):
    urls, _ = write_synthetic(str(tmp_path), 12, 3, max_size=100, seed=1)
    (tmp_path / "train-0007.idx").write_bytes(b"0\t0\n0\t0\n")  # duplicate offset
    from cloudrec.errors import IndexFileError
    with pytest.raises(IndexFileError, match=r"train-0007\.idx") as exc:
        open_dataset(str(tmp_path / "train-*.rec"), concurrency=8)
    assert "train-0007.rec" in str(exc.value)
