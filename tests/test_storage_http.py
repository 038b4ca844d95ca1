"""http:// through fsspec's HTTPFileSystem against a Range-capable server on loopback
(aiohttp's static file handler, run in a thread): dataset, ranged fetch, cache."""
import asyncio
import socket
import threading

import numpy as np
import pytest
from aiohttp import web

from cloudrec.dataset import open_dataset
from cloudrec.dataset.synthetic import write_synthetic
from cloudrec.errors import StorageError
from cloudrec.reader.fetch import RecordFetcher


@pytest.fixture(scope="module")
def http_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_static("/", str(root))
    runner = web.AppRunner(app)
    ready = threading.Event()

    def serve():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        ready.set()
        loop.run_forever()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert ready.wait(10)
    yield root, f"http://127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    t.join(10)


def test_http_dataset_fetch_and_cache(http_root, tmp_path):
    root, base = http_root
    local_urls, truth = write_synthetic(str(root), 3, 40, seed=41)
    urls = [base + "/" + u.rsplit("/", 1)[1] for u in local_urls]
    ds = open_dataset(urls)
    assert len(ds) == 120 and [s.size for s in ds.shards] == [
        (root / f"train-{i:04d}.rec").stat().st_size for i in range(3)]
    order = np.random.default_rng(0).permutation(120)
    for kw in ({}, {"max_gap": -1}, {"cache": "shards", "cache_dir": str(tmp_path / "c")}):
        with RecordFetcher(ds, **kw) as f:
            got = list(f.fetch(order))
            if kw.get("cache"):
                assert f._cache.cache.downloads == 3
        assert [r for r, _ in got] == order.tolist()
        assert all(p == truth[(int(ds.table.shard[r]), int(ds.table.key[r]))] for r, p in got)
    with pytest.raises(StorageError, match="missing.rec"):
        open_dataset(base + "/missing.rec")
