"""Writes cannot hang: through the loopback fault proxy set to stall every upload, a write
to S3 ends with a WriteTimeoutError naming the URL (the process is free to exit); without
faults the bytes arrive intact; local failures are StorageErrors naming the path."""
import os

import pytest

from cloudrec.errors import StorageError
from cloudrec.storage.writes import BoundedWriter, WriteTimeoutError, open_output, write_bytes


@pytest.mark.s3
def test_write_through_proxy_then_frozen_server_times_out(s3_server, fault_proxy):
    bucket = s3_server.new_bucket("writes")
    so = fault_proxy.storage_options
    data = os.urandom(3 << 20)
    url = bucket + "/ok/shard.rec"
    with open_output(url, so, timeout=30) as fh:
        for i in range(0, len(data), 1 << 20):
            fh.write(data[i:i + (1 << 20)])
    assert s3_server.filesystem().cat_file(url[5:]) == data
    # frozen: every upload request gets no answer for 60 s (longer than the write timeout)
    fault_proxy.configure(pstall=1.0, stall_s=60, methods="PUT,POST")
    frozen = bucket + "/frozen/shard.rec"
    with pytest.raises(WriteTimeoutError) as ei:
        with open_output(frozen, so, timeout=2) as fh:
            fh.write(data)
    msg = str(ei.value)
    assert frozen in msg and "no answer within 2 s" in msg
    assert isinstance(ei.value, StorageError) and isinstance(ei.value, TimeoutError)
    with pytest.raises(WriteTimeoutError, match="frozen/whole.idx"):
        write_bytes(bucket + "/frozen/whole.idx", b"0\t0\n", so, timeout=2)
    assert fault_proxy.stats()["stall"] >= 2
    fault_proxy.configure()
    assert not s3_server.filesystem().exists(frozen[5:])  # nothing half-written is visible


def test_local_writes_and_errors(tmp_path):
    out = tmp_path / "sub" / "x.rec"
    with open_output(str(out)) as fh:
        fh.write(b"abc")
        fh.write(b"def")
        assert fh.tell() == 6
    assert out.read_bytes() == b"abcdef"
    blocker = tmp_path / "file"
    blocker.write_bytes(b"x")
    with pytest.raises(StorageError, match="file/y.rec"):
        BoundedWriter(str(blocker / "y.rec"))
    assert "BoundedWriter(" in repr(open_output(str(tmp_path / "z.rec")))
