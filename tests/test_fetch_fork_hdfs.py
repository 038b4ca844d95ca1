"""A forked child of a process that used hdfs-native gets a clear error, never a hang
(hdfs-native's runtime threads do not survive fork; workers must use spawn)."""
import os

import pytest

from _forking import run_in_fork
from cloudrec.dataset import open_dataset
from cloudrec.dataset.synthetic import write_synthetic
from cloudrec.reader.fetch import RecordFetcher

pytestmark = pytest.mark.hdfs


def test_forked_child_gets_a_clear_error_not_a_hang(hdfs_server):
    base = hdfs_server.url + f"/fork-{os.getpid()}"
    so = hdfs_server.storage_options
    urls, truth = write_synthetic(base, 2, 30, seed=33, storage_options=so)
    ds = open_dataset(urls, storage_options=so)
    f = RecordFetcher(ds)
    assert f.get(0) == truth[(0, 0)]
    got = run_in_fork(lambda: [p for _, p in f.fetch([59, 1])] == [truth[(1, 59)], truth[(0, 1)]],
                      child_timeout=60, wait=90)
    assert got.startswith(b"E StorageError") and b"spawn" in got and b"train-000" in got, got
    assert f.get(30) == truth[(1, 30)]
