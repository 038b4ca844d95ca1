"""DaemonPool, the shard cache's download threads: results, errors, cancelling, and a
program whose cache download hangs (the fault proxy stalls it on loopback S3) still exits,
leaving a cache the next reader uses."""
import subprocess
import sys
import textwrap
import threading

import pytest

from cloudrec.dataset import open_dataset
from cloudrec.dataset.synthetic import write_synthetic
from cloudrec.reader.daemon_pool import DaemonPool
from cloudrec.reader.fetch import RecordFetcher


# ----------------------------------------------------------------------------- DaemonPool
def test_daemon_pool_results_errors_and_order():
    pool = DaemonPool(2, thread_name_prefix="t-daemon")
    futs = [pool.submit(lambda i=i: i * i) for i in range(20)]
    assert [f.result(timeout=30) for f in futs] == [i * i for i in range(20)]
    bad = pool.submit(lambda: 1 // 0)
    with pytest.raises(ZeroDivisionError):
        bad.result(timeout=30)
    names = {t.name for t in threading.enumerate() if t.name.startswith("t-daemon")}
    assert 1 <= len(names) <= 2
    assert all(t.daemon for t in threading.enumerate() if t.name.startswith("t-daemon"))
    pool.shutdown(wait=True)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(lambda: 0)


def test_daemon_pool_shutdown_cancels_queued_jobs():
    pool = DaemonPool(1)
    gate = threading.Event()
    running = pool.submit(gate.wait, 30)
    queued = [pool.submit(lambda: "never") for _ in range(3)]
    pool.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    gate.set()
    assert running.result(timeout=30) is True
    with pytest.raises(ValueError):
        DaemonPool(0)


def test_a_running_daemon_job_does_not_hold_the_interpreter_at_exit():
    code = textwrap.dedent("""
        import threading
        from cloudrec.reader.daemon_pool import DaemonPool
        pool = DaemonPool(2)
        never = threading.Event()
        futs = [pool.submit(never.wait) for _ in range(2)]
        print("submitted", flush=True)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "submitted"


# ----------------------------------------------------------------------------- S3
_CHILD = """
import os, sys
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
from cloudrec.dataset import open_dataset
from cloudrec.reader.fetch import RecordFetcher
ds = open_dataset({urls!r}, storage_options={so!r})
f = RecordFetcher(ds, cache="shards", cache_dir={cache!r})
print("opened", flush=True)
sys.stdin.readline()                 # the test stalls the proxy's GETs now
f._cache.submit(0, 0, 16)            # starts the shard's download, which hangs
print("downloading", flush=True)
"""


@pytest.mark.s3
def test_a_program_whose_cache_download_hangs_still_exits(s3_server, fault_proxy, tmp_path):
    bucket = s3_server.new_bucket("daemonexit")
    urls, truth = write_synthetic(bucket, 1, 40, seed=43, min_size=5_000, max_size=9_000,
                                  storage_options=s3_server.storage_options)
    cache = str(tmp_path / "cache")
    code = _CHILD.format(urls=urls, so=fault_proxy.storage_options, cache=cache)
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "opened"
        # every GET from now on sends no answer for 600 s: a joined download thread
        # would keep the child alive for the retries of that GET (~60 s with the proxy's 5 s
        # read timeout); the wait below gives up after 30 s
        fault_proxy.configure(pstall=1.0, stall_s=600, methods="GET")
        child.stdin.write("go\n")
        child.stdin.flush()
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
        fault_proxy.configure()
    assert child.returncode == 0, err
    assert out.strip() == "downloading"
    # the cut-off download published nothing wrong: the next reader gets every record
    ds = open_dataset(urls, storage_options=s3_server.storage_options)
    f = RecordFetcher(ds, cache="shards", cache_dir=cache)
    got = dict(f.fetch(range(len(ds))))
    assert len(got) == 40 and f.stats["cache_downloads"] == 1
    for rid, payload in got.items():
        assert bytes(payload) == truth[(int(ds.table.shard[rid]), int(ds.table.key[rid]))]
    f.close()


# ----------------------------------------------------------------------------- fork
@pytest.mark.parametrize("module, name", [("cloudrec.storage.cache", "_VERIFIED_LOCK"),
                                          ("cloudrec.storage.fs_calls", "_CLONES_LOCK"),
                                          ("cloudrec.storage.boto_share", "_shared._lock"),
                                          ("cloudrec.storage.ssl_share", "_shared._lock")])
def test_module_locks_held_by_a_download_thread_are_free_in_a_forked_child(module, name):
    """A DataLoader may fork while a cache download thread holds one of these locks."""
    import functools
    import importlib
    from _forking import run_in_fork
    mod = importlib.import_module(module)
    lock = functools.partial(functools.reduce, getattr, name.split("."))   # lock(mod): a.b
    held, release = threading.Event(), threading.Event()

    def holder():
        with lock(mod):
            held.set()
            release.wait(60)
    t = threading.Thread(target=holder, daemon=True)
    t.start()
    assert held.wait(30)
    try:
        got = run_in_fork(lambda: lock(mod).acquire(timeout=10), child_timeout=30,
                          wait=60)
    finally:
        release.set()
        t.join(30)
    assert got == b"1"
