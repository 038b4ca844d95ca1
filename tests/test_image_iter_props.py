"""Property tests of ImageIter's epoch logic (MXNet 1.9.1 rules, spec §3.5) over many
(N, batch, parts, last_batch_handle, shuffle) combinations, on tiny in-memory images."""
import cv2
import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cloudrec.image import ImageIter

_PNG = {i: cv2.imencode(".png", np.full((4, 4, 3), i, np.uint8))[1].tobytes() for i in range(64)}


class _MemIter(ImageIter):
    def read_image(self, fname):
        return _PNG[int(fname)]


def _make(n, batch, parts, part, handle, shuffle):
    imglist = [[float(i), str(i)] for i in range(n)]
    return _MemIter(batch, (3, 4, 4), imglist=imglist, path_root="mem", aug_list=[],
                    num_parts=parts, part_index=part, last_batch_handle=handle,
                    shuffle=shuffle, seed=n * 7 + batch, num_threads=2)


def _epoch(it):
    out = []
    for b in it:
        labels = b.label[0].astype(int).tolist()
        pixels = b.data[0][:, 0, 0, 0].astype(int).tolist()
        assert labels == pixels or b.pad  # the image is the record the label names
        out.append((b.pad, labels))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 40), batch=st.integers(1, 9), parts=st.integers(1, 4),
       data=st.data(), shuffle=st.booleans())
def test_pad_and_discard(n, batch, parts, data, shuffle):
    part = data.draw(st.integers(0, parts - 1))
    c = n // parts
    for handle in ("pad", "discard"):
        it = _make(n, batch, parts, part, handle, shuffle)
        for e in range(2):
            if e:
                it.reset()
            seq = [int(k) - 1 for k in it.seq]  # imglist keys are '1', '2', ... (as MXNet)
            assert sorted(seq) == list(range(part * c, (part + 1) * c))  # N // parts each
            got = _epoch(it)
            if handle == "discard":
                assert len(got) == c // batch and all(p == 0 for p, _ in got)
                assert sum((l for _, l in got), []) == seq[:c // batch * batch]
                continue
            assert len(got) == -(-c // batch)
            real = sum((l[:batch - p] for p, l in got), [])
            assert real == seq  # every record once, in the epoch's order
            if got and got[-1][0]:
                pad = got[-1][0]
                assert pad == len(got) * batch - c
                fill = got[-1][1][batch - pad:]
                want = (seq * 2)[:min(pad, c)] + [0] * max(0, pad - c)  # refilled from the start
                assert fill == want


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 30), batch=st.integers(1, 7), shuffle=st.booleans())
def test_roll_over_stream(n, batch, shuffle):
    assume(n >= batch)  # with fewer records than a batch MXNet returns short, zero-filled batches
    it = _make(n, batch, 1, 0, "roll_over", shuffle)
    stream, orders = [], []
    for e in range(4):
        if e:
            it.reset()
        carried = sum(len(o) for o in orders) - len(stream)  # tail rolled over from before
        orders.append([int(k) - 1 for k in it.seq])
        got = _epoch(it)
        assert all(len(l) == batch for _, l in got)  # roll_over never returns a short batch
        if got:  # MXNet reports pad = batch - carried on the first batch when it rolled over
            assert got[0][0] == (batch - carried if carried else 0)
            assert all(p == 0 for p, _ in got[1:])
        for _, labels in got:
            stream += labels
    # the batches, concatenated, are the epochs' orders back to back (the tail carried over)
    expected = sum(orders, [])
    assert stream == expected[:len(stream)]
    assert len(expected) - len(stream) < batch
