"""cloudrec's own option names (rank, world_size, threads, last_batch, the option objects) mean
the same on every front end as each one's MXNet keywords (one adapter: cloudrec.iterators.names)."""
from __future__ import annotations

import pytest

from cloudrec.errors import ConfigError
from cloudrec.iterators import ImageDetIter, ImageIter, ImageRecordIter, SegmentationIter
from cloudrec.options import DecodeOptions, FetchOptions, PartitionOptions
from test_frontends import _write, det_payloads, plain_payloads, seg_payloads


def _ids(it):
    with it:
        return [b.index.tolist() if getattr(b, "record_ids", None) is None
                else b.record_ids.tolist() for b in it]


@pytest.fixture
def plain(tmp_path):
    return _write(tmp_path / "plain", plain_payloads())


def test_image_record_iter_cloudrec_names_equal_mxnet_names(plain):
    rec, idx = plain
    base = dict(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 8, 8), batch_size=3,
                shuffle=True, seed=2)
    mx = ImageRecordIter(**base, part_index=1, num_parts=2, preprocess_threads=1,
                         round_batch=False, part_mode="even")
    cr = ImageRecordIter(**base, rank=1, world_size=2, threads=1, last_batch="fill",
                         partition=PartitionOptions(part_mode="even"))
    assert cr.params.parser.part_index == 1 and cr.params.parser.num_parts == 2
    assert cr.params.parser.preprocess_threads == 1 and cr.params.batch.round_batch is False
    assert _ids(cr) == _ids(mx)


def test_image_iter_and_det_iter_cloudrec_names(plain, tmp_path):
    rec, idx = plain
    kw = dict(path_imgrec=rec, path_imgidx=idx, shuffle=True, seed=3, part_mode="even")
    mx = ImageIter(3, (3, 8, 8), part_index=0, num_parts=3, num_threads=1,
                   last_batch_handle="discard", **kw)
    cr = ImageIter(3, (3, 8, 8), rank=0, world_size=3, last_batch="drop",
                   decode=DecodeOptions(threads=1), **kw)
    assert (cr.num_threads, cr.last_batch_handle, cr.sampler.world_size) == (1, "discard", 3)
    assert _ids(cr) == _ids(mx)
    drec, didx = _write(tmp_path / "det", det_payloads())
    det = ImageDetIter(3, (3, 8, 8), path_imgrec=drec, path_imgidx=didx, rank=1, world_size=2,
                       threads=1, label_shape=(2, 5), fetch=FetchOptions(concurrency=2))
    assert (det.num_threads, det.sampler.rank, det.sampler.world_size) == (1, 1, 2)
    assert det.fetcher.concurrency == 2


def test_segmentation_iter_cloudrec_names(tmp_path):
    rec, idx = _write(tmp_path / "seg", seg_payloads())
    mx = SegmentationIter(3, (3, 8, 8), rec, idx, shuffle=True, part_index=1, num_parts=2,
                          last_batch_handle="discard", rand_crop=True)
    cr = SegmentationIter(3, (3, 8, 8), rec, idx, shuffle=True, rank=1, world_size=2,
                          last_batch="drop", rand_crop=True)
    assert _ids(cr) == _ids(mx)


def test_a_name_and_its_mxnet_twin_together_is_an_error(plain):
    rec, idx = plain
    with pytest.raises(ConfigError, match="rank.*part_index|part_index.*rank"):
        ImageIter(3, (3, 8, 8), path_imgrec=rec, path_imgidx=idx, rank=1, part_index=1)
    with pytest.raises(ConfigError, match="threads|preprocess_threads"):
        ImageRecordIter(path_imgrec=rec, data_shape=(3, 8, 8), batch_size=3, threads=1,
                        preprocess_threads=2)


def test_reprs_and_stats_keep_secrets_out(plain):
    """params and shard reprs mask URL passwords and secret options; stats are exposed."""
    from cloudrec.dataset.shards import Shard
    from cloudrec.iterators.record_params import parse_kwargs
    p = parse_kwargs(dict(path_imgrec="http://reader:s3cr3t-pw@127.0.0.1/x.rec",
                          data_shape=(3, 8, 8), batch_size=2,
                          storage_options={"secret": "s3cr3t-key", "key": "AKIA"}))
    assert "s3cr3t" not in repr(p) and "127.0.0.1/x.rec" in repr(p)
    assert "s3cr3t" not in repr(Shard("s3://u:s3cr3t@b/c.rec", None, 3))
    rec, idx = plain
    with ImageRecordIter(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 8, 8),
                         batch_size=3) as it:
        n = sum(1 for _ in it)
        assert n == 8 and it.stats["requests"] >= 1 and it.stats["retries"] == 0


def test_image_iter_roll_over_resume_gives_the_same_pixels(plain):
    """A state saved with a rolled-over partial batch restores that batch: same record ids and,
    with random augmenters, the same pixels (each sample's Generator is seeded as before)."""
    import numpy as np
    rec, idx = plain
    kw = dict(path_imgrec=rec, path_imgidx=idx, shuffle=True, seed=4,
              last_batch_handle="roll_over", rand_crop=True, rand_mirror=True)
    with ImageIter(5, (3, 8, 8), **kw) as it:
        list(it)
        it.reset()
        state = it.state_dict()
        assert state["rollover"] and len(state["rollover"]) == 22 % 5
        want = [(b.record_ids.tolist(), b.data[0].copy()) for b in it]
    with ImageIter(5, (3, 8, 8), **kw) as it:
        it.load_state_dict(state)
        got = [(b.record_ids.tolist(), b.data[0].copy()) for b in it]
    assert [g[0] for g in got] == [w[0] for w in want]
    for (_, a), (_, b) in zip(got, want):
        np.testing.assert_array_equal(a, b)
