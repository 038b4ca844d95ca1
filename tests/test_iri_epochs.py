"""ImageRecordIter epochs: every record exactly once, partitions, shuffle, padding, threads.

Synthetic datasets: record i holds a 6x6 PNG whose pixels encode i, and label i,
so every output slot can be traced back to its record.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from cloudrec.errors import ConfigError
from cloudrec.iterators import ImageRecordIter
from cloudrec.reader.mxnet_shuffle import MXNetShuffle
from cloudrec.recordio import IRHeader, MXIndexedRecordIO, pack_img


def make_rec(tmp_path, n, name="d", side=6):
    rec, idx = str(tmp_path / f"{name}.rec"), str(tmp_path / f"{name}.idx")
    w = MXIndexedRecordIO(idx, rec, "w")
    for i in range(n):
        img = np.zeros((side, side, 3), np.uint8)
        img[..., 0] = i % 256          # B
        img[..., 1] = i // 256          # G
        img[..., 2] = 7                 # R
        w.write_idx(i, pack_img(IRHeader(0, float(i), i, 0), img, img_fmt=".png"))
    w.close()
    return rec, idx


def read_epoch(it):
    """(real record labels in order, all slots, pads) of one epoch."""
    real, slots, pads = [], [], []
    for b in it:
        lab = b.label[0].astype(int).tolist()
        slots.extend(lab)
        real.extend(lab[:len(lab) - b.pad])
        pads.append(b.pad)
        # the pixels agree with the label: the slot holds that record's image
        data = b.data[0]
        np.testing.assert_array_equal(data[:len(lab) - b.pad, 2, 0, 0],  # B channel = i % 256
                                      np.asarray(lab[:len(lab) - b.pad]) % 256)
    return real, slots, pads


CASES = [(n, bs, parts, rb) for n, bs, parts, rb in itertools.product(
    (1, 7, 24, 50), (1, 4, 9), (1, 2, 3), (True, False)) if n >= parts]


@pytest.mark.parametrize("n,bs,parts,round_batch", CASES)
def test_every_record_exactly_once_per_epoch(tmp_path, n, bs, parts, round_batch):
    rec, idx = make_rec(tmp_path, n)
    for use_idx, shuffle in ((True, False), (True, True), (False, True)):
        seen = []
        for part in range(parts):
            kw = dict(path_imgrec=rec, data_shape=(3, 6, 6), batch_size=bs, num_parts=parts,
                      part_index=part, round_batch=round_batch, shuffle=shuffle, seed=3,
                      dtype="uint8", preprocess_threads=2)
            if use_idx:
                kw["path_imgidx"] = idx
            try:
                it = ImageRecordIter(**kw)
            except ConfigError:
                assert not use_idx  # byte partitions of tiny files can be empty
                continue
            with it:
                for epoch in range(2):
                    if epoch:
                        it.reset()
                    batches = it.num_batches
                    real, slots, pads = read_epoch(it)
                    assert len(slots) == batches * bs  # num_batches predicts the epoch
                    assert len(slots) % bs == 0 and all(p == 0 for p in pads[:-1])
                    assert len(real) == it.num_records
                    assert sorted(real) == sorted(set(real))
                    if round_batch:  # pad slots repeat records of the partition
                        assert set(slots) <= set(it.epoch_order(epoch).tolist())
                    else:
                        assert all(s == 0 for s in slots[len(real):])
                    if epoch == 0:
                        seen.extend(real)
                        part_records = sorted(real)
                    else:
                        assert sorted(real) == part_records
        assert sorted(seen) == list(range(n)), (use_idx, shuffle)


def test_indexed_partitions_are_ceil_sized_consecutive_runs(tmp_path):
    rec, idx = make_rec(tmp_path, 10)
    sizes = []
    for part in range(3):
        with ImageRecordIter(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 6, 6),
                             batch_size=4, num_parts=3, part_index=part) as it:
            real, slots, pads = read_epoch(it)
        sizes.append(len(real))
        assert real == list(range(4 * part, 4 * part + len(real)))
        if len(real) % 4:  # padding wraps inside the part
            assert slots[len(real):] == real[:4 - len(real) % 4]
    assert sizes == [4, 4, 2]


def test_empty_partition_raises_clear_error(tmp_path):
    rec, idx = make_rec(tmp_path, 3)
    with pytest.raises(ConfigError, match="partition 3 of 4 is empty"):
        ImageRecordIter(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 6, 6),
                        batch_size=2, num_parts=4, part_index=3)


def test_shuffle_deterministic_and_different_per_epoch(tmp_path):
    rec, idx = make_rec(tmp_path, 40)
    kw = dict(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 6, 6), batch_size=8,
              shuffle=True, seed=5, preprocess_threads=3)

    def orders():
        with ImageRecordIter(**kw) as it:
            out = []
            for e in range(3):
                if e:
                    it.reset()
                out.append(read_epoch(it)[0])
        return out

    a, b = orders(), orders()
    assert a == b
    assert a[0] != a[1] != a[2] and a[0] != a[2]
    assert all(sorted(x) == list(range(40)) for x in a)
    with ImageRecordIter(**dict(kw, seed=6)) as it:
        assert read_epoch(it)[0] != a[0]
    # set_epoch jumps straight to an epoch's order
    with ImageRecordIter(**kw) as it:
        it.set_epoch(2)
        assert read_epoch(it)[0] == a[2]


@pytest.mark.parametrize("mode", ["global", "block"])
def test_reader_layer_shuffle_modes(tmp_path, mode):
    rec, idx = make_rec(tmp_path, 30)
    kw = dict(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 6, 6), batch_size=7,
              shuffle=True, seed=1, shuffle_mode=mode)
    with ImageRecordIter(**kw) as it:
        e0 = read_epoch(it)[0]
        it.reset()
        e1 = read_epoch(it)[0]
    assert sorted(e0) == sorted(e1) == list(range(30))
    if mode == "global":
        assert e0 != e1


def test_mxnet_shuffle_jump_equals_walk():
    walk = MXNetShuffle(1000, 4)
    seq = [walk.permutation(e) for e in range(5)]
    jump = MXNetShuffle(1000, 4)
    np.testing.assert_array_equal(jump.permutation(4), seq[4])
    np.testing.assert_array_equal(jump.permutation(1), seq[1])
    for p in seq:
        assert sorted(p.tolist()) == list(range(1000))


def test_reset_before_reading_is_a_noop(tmp_path):
    rec, idx = make_rec(tmp_path, 10)
    kw = dict(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 6, 6), batch_size=4,
              shuffle=True, seed=0)
    with ImageRecordIter(**kw) as a, ImageRecordIter(**kw) as b:
        b.reset()
        assert read_epoch(a)[1] == read_epoch(b)[1]
        assert a.epoch == b.epoch == 0


def test_output_independent_of_thread_count(tmp_path):
    rec, idx = make_rec(tmp_path, 33, side=12)
    kw = dict(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 8, 8), batch_size=5,
              shuffle=True, rand_crop=True, rand_mirror=True, brightness=0.3,
              max_rotate_angle=10, seed=2)
    outs = []
    for threads, prefetch in ((1, 1), (4, 3)):
        with ImageRecordIter(preprocess_threads=threads, prefetch_buffer=prefetch, **kw) as it:
            outs.append(np.concatenate([b.data[0] for b in it]))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_batches_are_not_recycled(tmp_path):
    rec, idx = make_rec(tmp_path, 20)
    with ImageRecordIter(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 6, 6),
                         batch_size=2, prefetch_buffer=1) as it:
        batches = list(it)
    for i, b in enumerate(batches):  # a kept batch is never overwritten by later ones
        assert b.label[0].tolist() == [2 * i, 2 * i + 1]
        assert b.data[0][:, 2, 0, 0].tolist() == [2 * i, 2 * i + 1]


def test_several_shards_as_one_dataset(tmp_path):
    a_rec, a_idx = make_rec(tmp_path, 7, name="a")
    b_rec, b_idx = make_rec(tmp_path, 5, name="b")
    kw = dict(data_shape=(3, 6, 6), batch_size=4, dtype="uint8")
    with ImageRecordIter(path_imgrec=[a_rec, b_rec], path_imgidx=[a_idx, b_idx], **kw) as it:
        real, _, pads = read_epoch(it)
    assert real == list(range(7)) + list(range(5)) and pads == [0, 0, 0]
    # MXNet's ';'-separated form, without .idx: byte partitions over the concatenated files
    seen = []
    for part in range(2):
        with ImageRecordIter(path_imgrec=f"{a_rec};{b_rec}", num_parts=2, part_index=part,
                             **kw) as it:
            seen += read_epoch(it)[0]
    assert sorted(seen) == sorted(list(range(7)) + list(range(5)))
    with ImageRecordIter(path_imgrec=str(tmp_path / "*.rec"), shuffle=True, **kw) as it:
        assert sorted(read_epoch(it)[0]) == sorted(list(range(7)) + list(range(5)))


def _reference_std_shuffle(n, seed, epochs):
    """libstdc++ std::shuffle with uniform_int_distribution, one raw draw at a time."""
    bg = np.random.MT19937()
    bg._legacy_seeding(111 + seed)
    out = []
    for _ in range(epochs):
        perm = list(range(n))
        for i in range(1, n):
            scaling = ((1 << 32) - 1) // (i + 1)
            while True:
                r = int(bg.random_raw())
                if r < (i + 1) * scaling:
                    break
            j = r // scaling
            perm[i], perm[j] = perm[j], perm[i]
        out.append(perm)
    return out


def test_mxnet_shuffle_bulk_draws_equal_scalar_reference_with_rejections():
    # n = 200k makes the rejection branch fire several times per shuffle
    n = 200_000
    ref = _reference_std_shuffle(n, 0, 2)
    sh = MXNetShuffle(n, 0)
    assert sh.permutation(0).tolist() == ref[0]
    assert sh.permutation(1).tolist() == ref[1]
    small = _reference_std_shuffle(24, 1, 3)
    assert [MXNetShuffle(24, 1).permutation(e).tolist() for e in range(3)] == small


def test_dropped_batch_arrays_are_reused_kept_ones_and_views_are_not(tmp_path):
    rec, idx = make_rec(tmp_path, 60)
    kept, views, seen_ids = {}, {}, []
    with ImageRecordIter(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 6, 6),
                         batch_size=3, prefetch_buffer=2, preprocess_threads=2) as it:
        for i, b in enumerate(it):
            seen_ids.append(id(b.data[0]))
            if i % 5 == 0:
                kept[i] = b
            if i % 5 == 1:
                views[i] = b.data[0][1:]          # a view keeps its base alive
            del b
    assert len(set(seen_ids)) < len(seen_ids)       # dropped arrays were recycled
    for i, b in kept.items():
        assert b.label[0].tolist() == [3 * i, 3 * i + 1, 3 * i + 2]
        assert b.data[0][:, 2, 0, 0].tolist() == [3 * i, 3 * i + 1, 3 * i + 2]
    for i, v in views.items():
        assert v[:, 2, 0, 0].tolist() == [3 * i + 1, 3 * i + 2]


def test_state_dict_resumes_at_the_next_batch(tmp_path):
    rec, idx = make_rec(tmp_path, 23, side=10)
    kw = dict(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 8, 8), batch_size=4,
              shuffle=True, seed=4, rand_crop=True, rand_mirror=True)
    with ImageRecordIter(**kw) as it:
        it.set_epoch(1)
        full = [b.data[0].copy() for b in it]
        it.set_epoch(1)
        for _ in range(3):
            next(it)
        state = it.state_dict()
    assert (state["epoch"], state["consumed"], state["partition"]) == (1, 12, "mxnet-count")
    with ImageRecordIter(**kw) as it:
        it.load_state_dict(state)
        rest = [b.data[0].copy() for b in it]
        assert (it.state_dict()["epoch"], it.state_dict()["consumed"]) == (1, 24)
    assert len(rest) == 3
    for a, b in zip(rest, full[3:]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("n,parts,bs", [(10, 3, 4), (23, 2, 5), (5, 3, 4), (40, 4, 3)])
def test_even_part_mode_equal_batch_counts_exactly_once(tmp_path, n, parts, bs):
    rec, idx = make_rec(tmp_path, n)
    for shuffle, round_batch in ((False, True), (True, True), (True, False)):
        for epoch in (0, 1):
            seen, counts = [], []
            for part in range(parts):
                with ImageRecordIter(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 6, 6),
                                     batch_size=bs, num_parts=parts, part_index=part,
                                     part_mode="even", shuffle=shuffle, seed=9,
                                     round_batch=round_batch) as it:
                    it.set_epoch(epoch)
                    real, slots, pads = read_epoch(it)
                counts.append(len(pads))
                seen += real
                if not round_batch:
                    assert all(s == 0 for s in slots[len(real):])
            assert len(set(counts)) == 1                      # same number of batches
            assert sorted(seen) == list(range(n))             # every record exactly once
