"""cloudrec.torch_shm: a worker's large payloads cross to the main process through /dev/shm."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.utils.data as tud  # noqa: E402

from cloudrec import torch_shm  # noqa: E402
from cloudrec.errors import CloudrecError  # noqa: E402
from cloudrec.recordio import IRHeader, MXIndexedRecordIO, pack, unpack  # noqa: E402
from cloudrec.torch import RecordIterableDataset  # noqa: E402
from cloudrec.torch_shm import PREFIX, shared_payloads, sweep_orphans  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs /dev/shm (Linux)")


def _ours(pid: int = None) -> list:
    names = [n for n in os.listdir(torch_shm.SHM_DIR) if n.startswith(PREFIX)]
    return names if pid is None else [n for n in names
                                      if n.startswith(f"{PREFIX}{torch_shm._NS}-{pid}-")]


def _batch(rng: np.random.Generator) -> dict:
    payloads = [rng.integers(0, 256, int(rng.integers(9000, 70000)), dtype=np.uint8).tobytes()
                for _ in range(12)]
    return {"items": [(k, p) for k, p in enumerate(payloads)],
            "extra": (bytearray(payloads[0]), rng.random((40, 50, 3)).astype(np.float32),
                      np.arange(12, dtype=np.int16), b"small", "text"),
            "nested": {"a": [payloads[1], None, 3.5]}}


def _same(a, b) -> None:
    assert type(a) is type(b)
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
        assert b.flags.writeable and b.flags.owndata
    else:
        assert a == b


def test_round_trip_keeps_types_and_values_and_removes_the_file():
    obj = _batch(np.random.default_rng(0))
    before = set(_ours(os.getpid()))
    moved = shared_payloads(obj, in_worker=True)
    assert type(moved) is torch_shm._Batch
    new = set(_ours(os.getpid())) - before
    assert len(new) == 1
    size = os.path.getsize(os.path.join(torch_shm.SHM_DIR, new.pop()))
    big = sum(len(p) for _, p in obj["items"]) + len(obj["extra"][0]) + obj["extra"][1].nbytes \
        + len(obj["nested"]["a"][0])
    assert size == big                              # the small int16 array stays in the pickle
    data = pickle.dumps(moved)
    assert len(data) < 4096                          # references only: no payload in the pickle
    back = pickle.loads(data)
    _same(obj, back)
    assert set(_ours(os.getpid())) == before         # unlinked once unpickled


def test_small_batches_and_the_main_process_keep_the_pickle():
    rng = np.random.default_rng(1)
    small = {"items": [(0, b"x" * 20000)]}           # under MIN_TOTAL
    assert shared_payloads(small, in_worker=True) is small
    big = _batch(rng)
    assert shared_payloads(big) is big               # not in a DataLoader worker


def test_no_writable_shm_falls_back_to_the_pickle(monkeypatch, tmp_path):
    monkeypatch.setattr(torch_shm, "SHM_DIR", str(tmp_path / "missing"))
    obj = _batch(np.random.default_rng(2))
    assert shared_payloads(obj, in_worker=True) is obj


def test_a_full_shm_falls_back_and_leaves_no_file(monkeypatch, tmp_path):
    monkeypatch.setattr(torch_shm, "SHM_DIR", str(tmp_path))

    def full(fd, views):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch_shm.os, "writev", full)
    obj = _batch(np.random.default_rng(3))
    assert shared_payloads(obj, in_worker=True) is obj
    assert os.listdir(tmp_path) == []


def test_short_writes_are_resumed(monkeypatch, tmp_path):
    monkeypatch.setattr(torch_shm, "SHM_DIR", str(tmp_path))
    real = os.writev

    def short(fd, views):   # at most 10,000 bytes per call, as a pipe or signal might
        out, left = [], 10000
        for v in views:
            out.append(memoryview(v)[:left])
            left -= out[-1].nbytes
            if not left:
                break
        return real(fd, out)
    monkeypatch.setattr(torch_shm.os, "writev", short)
    obj = _batch(np.random.default_rng(4))
    _same(obj, pickle.loads(pickle.dumps(shared_payloads(obj, in_worker=True))))
    assert os.listdir(tmp_path) == []


def test_a_vanished_file_is_a_cloudrec_error(monkeypatch, tmp_path):
    monkeypatch.setattr(torch_shm, "SHM_DIR", str(tmp_path))
    data = pickle.dumps(shared_payloads(_batch(np.random.default_rng(5)), in_worker=True))
    for n in os.listdir(tmp_path):
        os.unlink(tmp_path / n)
    with pytest.raises(CloudrecError, match="batch file .* is gone"):
        pickle.loads(data)


def test_a_truncated_file_is_a_cloudrec_error_not_a_short_payload(monkeypatch, tmp_path):
    monkeypatch.setattr(torch_shm, "SHM_DIR", str(tmp_path))
    data = pickle.dumps(shared_payloads(_batch(np.random.default_rng(7)), in_worker=True))
    (name,) = os.listdir(tmp_path)
    os.truncate(tmp_path / name, 100_000)
    with pytest.raises(CloudrecError, match="holds 100000 bytes, but a payload ends at"):
        pickle.loads(data)
    assert os.listdir(tmp_path) == [] and not torch_shm._open   # the lost batch's file is freed


def test_sweep_removes_files_of_exited_workers_of_this_namespace_only(monkeypatch, tmp_path):
    monkeypatch.setattr(torch_shm, "SHM_DIR", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ns = torch_shm._NS
    other_ns = f"{PREFIX}{int(ns) + 1}-{dead}-3-aa"   # another container's: its pids mean nothing here
    for name in (f"{PREFIX}{ns}-{dead}-0-ab", f"{PREFIX}{ns}-{os.getppid()}-1-cd",
                 f"{PREFIX}{ns}-{os.getpid()}-2-ef", other_ns, "someone-else-123"):
        (tmp_path / name).write_bytes(b"x")
    assert sweep_orphans() == 1
    assert sorted(os.listdir(tmp_path)) == sorted([f"{PREFIX}{ns}-{os.getppid()}-1-cd",
                                                   f"{PREFIX}{ns}-{os.getpid()}-2-ef",
                                                   other_ns, "someone-else-123"])


_RELEASED: list = []
_REAL_RELEASE = torch_shm._release


def _recording_release(name, obj):   # module-level: the workers pickle it by name
    _RELEASED.append(name)
    return _REAL_RELEASE(name, obj)


def _raw(payload: bytes) -> tuple:
    header, img = unpack(payload)
    return int(header.label), bytes(img)


@pytest.fixture()
def rec(tmp_path):
    rng = np.random.default_rng(6)
    path = str(tmp_path / "d.rec")
    w = MXIndexedRecordIO(path[:-4] + ".idx", path, "w")
    blobs = []
    for k in range(90):
        blob = rng.integers(0, 256, int(rng.integers(20000, 60000)), dtype=np.uint8).tobytes()
        blobs.append(blob)
        w.write_idx(k, pack(IRHeader(0, float(k % 7), k, 0), blob))
    w.close()
    return path, blobs


def test_dataloader_batches_arrive_unchanged_and_leave_no_file(rec, monkeypatch):
    path, blobs = rec
    released = _RELEASED
    released.clear()
    monkeypatch.setattr(torch_shm, "_release", _recording_release)
    ds = RecordIterableDataset(path, decode=_raw, collate=list, batch_size=16, seed=3,
                               mode="global")
    seen = {}
    loader = tud.DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="fork")
    for b in loader:
        for rid, pad, (label, img) in zip(b["ids"].tolist(), b["is_pad"].tolist(), b["data"]):
            assert type(img) is bytes and img == blobs[rid] and label == rid % 7
            if not pad:
                assert rid not in seen
                seen[rid] = img
    assert sorted(seen) == list(range(90))
    assert len(released) == 6                        # every batch (90 -> 6 of 16) came by /dev/shm
    assert not [n for n in _ours() if n in released]


def test_a_loop_stopped_early_leaves_files_only_until_the_next_sweep(rec):
    path, _ = rec
    ds = RecordIterableDataset(path, decode=_raw, collate=list, batch_size=16, seed=3)
    loader = tud.DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="fork",
                            prefetch_factor=2)
    it = iter(loader)
    next(it)
    pids = [w.pid for w in it._workers]
    for _ in range(500):   # the batches prefetched behind the first one are written (<= 5 s)
        if any(_ours(pid) for pid in pids):
            break
        time.sleep(0.01)
    assert any(_ours(pid) for pid in pids)
    del it   # torch stops its workers; batches still queued are dropped unread
    import gc
    gc.collect()
    for pid in pids:   # the workers are gone (bounded wait)
        for _ in range(200):
            if not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z":
                break
            time.sleep(0.01)
    sweep_orphans()
    assert not any(_ours(pid) for pid in pids)
