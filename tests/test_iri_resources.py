"""ImageRecordIter resources: flat RSS over epochs, no thread or memory growth over
100 create/close cycles (apache/mxnet#15218), close mid-epoch, errors naming the record."""
from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

from cloudrec.errors import ImageDecodeError
from cloudrec.iterators import ImageRecordIter
from cloudrec.recordio import IRHeader, MXIndexedRecordIO, pack, pack_img


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def wait_threads(n: int, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if threading.active_count() <= n:
            return
        threading.Event().wait(0.02)


@pytest.fixture(scope="module")
def small_rec(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("res")
    rec, idx = str(tmp / "s.rec"), str(tmp / "s.idx")
    rng = np.random.default_rng(0)
    w = MXIndexedRecordIO(idx, rec, "w")
    for i in range(120):
        img = rng.integers(0, 255, (48 + i % 17, 40 + i % 13, 3), dtype=np.uint8)
        w.write_idx(i, pack_img(IRHeader(0, float(i % 10), i, 0), img, quality=90))
    w.close()
    return rec, idx


def kwargs(rec, idx, **kw):
    return dict(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 32, 32), batch_size=16,
                resize=40, rand_crop=True, rand_mirror=True, shuffle=True,
                mean_r=120, std_r=60, preprocess_threads=2, prefetch_buffer=3, **kw)


def test_rss_flat_over_epochs(small_rec):
    with ImageRecordIter(**kwargs(*small_rec)) as it:
        for _ in it:
            pass
        gc.collect()
        after_first = rss_bytes()
        for _ in range(4):
            it.reset()
            for _ in it:
                pass
        gc.collect()
        after_five = rss_bytes()
    assert after_five <= after_first * 1.05, (after_first, after_five)


def test_create_close_100_iterators_no_thread_or_memory_growth(small_rec):
    wait_threads(1, timeout=2.0)  # let earlier tests' pools finish exiting
    base_threads = threading.active_count()

    def cycle(k):
        for _ in range(k):
            with ImageRecordIter(**kwargs(*small_rec)) as it:
                next(it)
                next(it)  # leave the producer mid-epoch with a full queue
    cycle(10)
    gc.collect()
    start = rss_bytes()
    cycle(100)
    gc.collect()
    # the reader layer's range-reader pool shuts down without waiting: give it a moment
    wait_threads(base_threads)
    assert threading.active_count() == base_threads, [t.name for t in threading.enumerate()]
    grown = rss_bytes() - start
    assert grown < 8 << 20, f"RSS grew by {grown / 1e6:.1f} MB over 100 iterators"


def test_unclosed_iterator_is_collected_and_its_threads_stop(small_rec):
    wait_threads(1, timeout=2.0)
    base_threads = threading.active_count()
    it = ImageRecordIter(**kwargs(*small_rec))
    next(it)
    assert threading.active_count() > base_threads
    del it
    gc.collect()
    wait_threads(base_threads)
    assert threading.active_count() == base_threads


def test_closed_iterator_refuses_use(small_rec):
    it = ImageRecordIter(**kwargs(*small_rec))
    it.close()
    it.close()
    with pytest.raises(ValueError, match="closed"):
        next(it)
    with pytest.raises(ValueError, match="closed"):
        it.reset()


def test_bad_record_error_names_record_then_epoch_ends(tmp_path):
    rec, idx = str(tmp_path / "b.rec"), str(tmp_path / "b.idx")
    w = MXIndexedRecordIO(idx, rec, "w")
    good = pack_img(IRHeader(0, 0.0, 0, 0), np.full((8, 8, 3), 5, np.uint8), img_fmt=".png")
    for i in range(10):
        w.write_idx(i, good if i != 6 else pack(IRHeader(0, 0.0, 6, 0), b"junk"))
    w.close()
    with ImageRecordIter(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 8, 8),
                         batch_size=4, preprocess_threads=3) as it:
        assert next(it).pad == 0
        with pytest.raises(ImageDecodeError, match=r"record id 6: .*b\.rec, key 6"):
            next(it)
        with pytest.raises(StopIteration):
            next(it)
        it.reset()  # a new epoch starts cleanly and fails at the same record
        next(it)
        with pytest.raises(ImageDecodeError):
            next(it)


def test_storage_stage_error_reaches_consumer_naming_record(tmp_path):
    from cloudrec.errors import RecordIOError
    rec, idx = str(tmp_path / "t.rec"), str(tmp_path / "t.idx")
    w = MXIndexedRecordIO(idx, rec, "w")
    img = np.full((8, 8, 3), 5, np.uint8)
    for i in range(9):
        w.write_idx(i, pack_img(IRHeader(0, 0.0, i, 0), img, img_fmt=".png"))
    w.close()
    data = bytearray(open(rec, "rb").read())
    offsets = [int(line.split()[1]) for line in open(idx)]
    data[offsets[5]:offsets[5] + 4] = b"\0\0\0\0"  # break record 5's magic
    open(rec, "wb").write(bytes(data))
    with ImageRecordIter(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 8, 8),
                         batch_size=3, prefetch_buffer=2) as it:
        assert next(it).index.tolist() == [0, 1, 2]
        with pytest.raises(RecordIOError, match=r"bad magic.*t\.rec"):
            next(it)


def test_close_from_another_thread_wakes_a_blocked_consumer(tmp_path):
    import time
    from cloudrec.pipeline.batcher import BatchPipeline, BatchPlan

    def slow_fetch(ids):
        for rid in ids.tolist():
            time.sleep(0.5)
            yield rid, b""
    pipe = BatchPipeline(slow_fetch, lambda *a: None, (1,), np.float32, 1, threads=1,
                         prefetch=1)
    pipe.start([BatchPlan(np.arange(4), 0, 0)])
    result = []
    t = threading.Thread(target=lambda: result.append(pipe.next()))
    t.start()
    time.sleep(0.1)
    pipe.close()
    t.join(5)
    assert not t.is_alive() and result == [None]
