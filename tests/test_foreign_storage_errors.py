"""Issue #15 item 5: a filesystem failure (botocore's EndpointConnectionError against an
endpoint where nothing listens, on 127.0.0.1) reaches the caller of recordio, im2rec's
writer, index and open_dataset as a cloudrec StorageError naming the object, not as a
foreign exception."""
from __future__ import annotations

import pytest

from cloudrec.errors import StorageError
from cloudrec.testing.servers import free_ports


@pytest.fixture(scope="module")
def dead_s3():
    port = free_ports(1)[0]  # nothing listens there
    return {"endpoint_url": f"http://127.0.0.1:{port}", "key": "k", "secret": "s",
            "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1}}


def _write_rec(so):
    from cloudrec.recordio import MXRecordIO
    r = MXRecordIO("s3://bk/x.rec", "w", so)
    r.write(b"abc")
    r.close()  # the upload happens here


def _shards(so):
    from cloudrec.tools.packing import ShardedWriter
    w = ShardedWriter("s3://bk/out", "all", so, total=2, num_shards=2)
    w.write(0, 0, b"x" * 30)
    w.write(1, 1, b"y" * 30)
    w.commit()


CALLS = {
    "MXRecordIO read": lambda so: __import__("cloudrec.recordio", fromlist=["x"]).MXRecordIO(
        "s3://bk/x.rec", "r", so),
    "MXIndexedRecordIO read": lambda so: __import__(
        "cloudrec.recordio", fromlist=["x"]).MXIndexedRecordIO("s3://bk/x.idx", "s3://bk/x.rec",
                                                               "r", storage_options=so),
    "MXRecordIO write": _write_rec,
    "ShardedWriter": _shards,
    "write_bytes_atomic": lambda so: __import__(
        "cloudrec.tools.packing", fromlist=["x"]).write_bytes_atomic("s3://bk/o/a.lst", b"x", so),
    "rebuild_index": lambda so: __import__(
        "cloudrec.tools.index", fromlist=["x"]).rebuild_index("s3://bk/x.rec", so),
    "open_dataset glob": lambda so: __import__(
        "cloudrec.dataset", fromlist=["x"]).open_dataset("s3://bk/x-*.rec", storage_options=so),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_unreachable_endpoint_is_a_storage_error(dead_s3, name):
    with pytest.raises(StorageError) as exc:
        CALLS[name](dead_s3)
    msg = str(exc.value)
    assert "s3://bk/" in msg and "EndpointConnectionError" in msg, msg
