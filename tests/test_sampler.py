"""EpochSampler: epochs, determinism, and resumption from a global state, also with another W."""
from __future__ import annotations

import json
import subprocess
import sys
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudrec.errors import ConfigError
from cloudrec.reader.orders import epoch_order
from cloudrec.reader.sampler import EpochSampler

# Simulates W ranks in lockstep, each with K DataLoader-like workers polled round-robin;
# optionally restores a state first and/or stops after a step.
RUN = r'''
import json, sys
from cloudrec.reader.sampler import EpochSampler
a = json.loads(sys.argv[1])
K = a.get("K", 1)
ss = [EpochSampler(a["n"], seed=a["seed"], mode=a["mode"], rank=r, world_size=a["W"],
                   batch_size=a["B"], last=a["last"], order_options={"block_size": 5, "buffer_size": 9})
      for r in range(a["W"])]
for s in ss:
    s.use_workers(K)
if a.get("state"):
    for s in ss:
        s.load_state_dict(a["state"])

def rank_batches(s):
    its = [list(s.epoch_slice(k, K).batches()) for k in range(K)]
    start = s.consumed
    for i in range(max(len(x) for x in its)):
        for x in its:
            if i < len(x):
                s.consumed = s.consumed_after(start, 1)   # counted when handed out
                start = s.consumed
                yield x[i]

first = ss[0].epoch
out = {"steps": [], "state": None}
for e in range(first, a["epochs"]):
    for s in ss:
        s.set_epoch(e)
    for b, step in enumerate(zip(*[rank_batches(s) for s in ss])):
        out["steps"].append([e, [[ids.tolist(), pad.tolist()] for ids, pad in step]])
        if a.get("stop") == [e, b + 1]:
            states = [s.state_dict() for s in ss]
            assert all(st == states[0] for st in states)
            out["state"] = states[0]
            print(json.dumps(out)); sys.exit(0)
print(json.dumps(out))
'''


def run(**kw):
    p = subprocess.run([sys.executable, "-c", RUN, json.dumps(kw)], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def real_sequence(steps, epoch):
    """Real (non-pad) ids of one epoch in global order: step by step, rank by rank."""
    seq = []
    for e, ranks in steps:
        if e == epoch:
            for ids, pad in ranks:
                seq.extend(i for i, p in zip(ids, pad) if not p)
    return seq


@pytest.mark.parametrize("n,W,W2,K,K2,B,last,mode,stop", [
    (50, 4, 2, 1, 1, 3, "pad", "global", [1, 2]),
    (50, 2, 4, 2, 3, 3, "pad", "block", [0, 5]),
    (37, 3, 3, 2, 2, 2, "pad", "shard", [1, 3]),
    (37, 3, 3, 3, 1, 2, "pad", "block", [0, 2]),
    (37, 3, 1, 1, 2, 4, "pad", "none", [0, 1]),
    (64, 4, 3, 2, 2, 2, "drop", "global", [1, 4]),
    (64, 2, 2, 4, 4, 5, "drop", "block", [1, 1]),
])
def test_resume_in_a_fresh_process(n, W, W2, K, K2, B, last, mode, stop):
    common = dict(n=n, seed=17, mode=mode, B=B, last=last, epochs=3)
    whole = run(W=W, K=K, **common)
    part1 = run(W=W, K=K, stop=stop, **common)
    assert part1["state"]["epoch"] == stop[0]
    assert part1["state"]["layout"] == [W, K, B, last]
    part2 = run(W=W2, K=K2, state=part1["state"], **common)
    e = stop[0]
    order = epoch_order(n, 17, e, mode, block_size=5, buffer_size=9).tolist()
    both = real_sequence(part1["steps"], e) + real_sequence(part2["steps"], e)
    if (W2, K2) == (W, K):
        # same layout: the continuation is exactly the uninterrupted run's batches
        assert part1["steps"] + part2["steps"] == whole["steps"]
    elif last == "pad":
        # every record of the epoch exactly once over both runs
        assert sorted(both) == sorted(real_sequence(whole["steps"], e)) == list(range(n))
    else:
        assert len(set(both)) == len(both) and set(both) <= set(order)
        assert n - len(both) < max(W, W2) * B
    # later epochs are whole epochs with the new layout: the first W2*T*B positions of the order
    nxt = epoch_order(n, 17, e + 1, mode, block_size=5, buffer_size=9).tolist()
    kept = n if last == "pad" else n // (W2 * B) * (W2 * B)
    assert sorted(real_sequence(part2["steps"], e + 1)) == sorted(nxt[:kept])


@settings(max_examples=120, deadline=None)
@given(n=st.integers(1, 120), W=st.integers(1, 5), W2=st.integers(1, 5), B=st.integers(1, 6),
       mode=st.sampled_from(["global", "block", "shard", "none"]), data=st.data())
def test_resume_from_a_json_state_any_world_size(n, W, W2, B, mode, data):
    ss = [EpochSampler(n, seed=5, mode=mode, rank=r, world_size=W, batch_size=B) for r in range(W)]
    e = data.draw(st.integers(0, 2))
    for s in ss:
        s.set_epoch(e)
    steps = len(ss[0])
    stop = data.draw(st.integers(0, steps))
    seq = []
    for _, step in zip(range(stop), zip(*ss)):
        for ids, pad in step:
            seq.extend(ids[~pad].tolist())
    state = json.loads(json.dumps(ss[0].state_dict()))
    new = [EpochSampler(n, seed=999, mode=mode, rank=r, world_size=W2, batch_size=B) for r in range(W2)]
    for s in new:
        s.load_state_dict(state)
        s.set_epoch(e)
        assert s.seed == 5
    for step in zip(*new):
        for ids, pad in step:
            seq.extend(ids[~pad].tolist())
    assert sorted(seq) == list(range(n))
    if W2 == W:   # same layout: the same batches as an uninterrupted run
        again = [EpochSampler(n, seed=5, mode=mode, rank=r, world_size=W, batch_size=B, epoch=e)
                 for r in range(W)]
        ref = [ids[~pad].tolist() for step in zip(*again) for ids, pad in step]
        assert seq == [i for b in ref for i in b]


def test_iteration_moves_through_epochs_and_is_deterministic():
    a = EpochSampler(40, seed=3, rank=1, world_size=2, batch_size=4)
    b = EpochSampler(40, seed=3, rank=1, world_size=2, batch_size=4)
    ep0 = [ids.tolist() for ids, _ in a]
    assert a.epoch == 1 and a.state_dict()["consumed"] == 0
    ep1 = [ids.tolist() for ids, _ in a]
    assert len(ep0) == len(ep1) == 5 and ep0 != ep1
    b.set_epoch(1)
    assert [ids.tolist() for ids, _ in b] == ep1
    c = EpochSampler(40, seed=4, rank=1, world_size=2, batch_size=4)
    assert [ids.tolist() for ids, _ in c] != ep0


def test_state_counts_global_samples_and_clamps_at_the_end():
    s = EpochSampler(10, seed=0, rank=0, world_size=3, batch_size=2)
    it = iter(s)
    next(it)
    assert s.state_dict()["consumed"] == 6
    next(it)
    assert s.state_dict()["consumed"] == 10 and s.state_dict()["epoch"] == 0
    assert list(it) == [] and s.epoch == 1
    s.load_state_dict({"version": 1, "seed": 0, "epoch": 0, "consumed": 10})
    assert len(s) == 0 and list(s) == [] and s.epoch == 1


def test_set_epoch_keeps_progress_of_the_current_epoch_only():
    s = EpochSampler(30, seed=1, batch_size=5)
    it = iter(s)
    next(it), next(it)
    s.set_epoch(0)
    assert s.consumed == 10 and len(s) == 4
    s.set_epoch(2)
    assert s.consumed == 0 and len(s) == 6 and s.epoch == 2


def test_part_index_num_parts_and_environment(monkeypatch):
    s = EpochSampler(10, part_index=1, num_parts=3)
    assert (s.rank, s.world_size) == (1, 3)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    s = EpochSampler(10)
    assert (s.rank, s.world_size) == (2, 4)


@pytest.mark.parametrize("state,match", [
    ({"version": 1, "seed": 0, "epoch": 0, "consumed": 0, "num_records": 11}, "11 records"),
    ({"version": 1, "seed": 0, "epoch": 0, "consumed": 0, "mode": "block"}, "mode"),
    ({"version": 3, "seed": 0, "epoch": 0, "consumed": 0}, "version"),
    ({"version": 2, "seed": 0, "epoch": 0, "consumed": 3, "legs": [[1, 1, 0, "pad", 1]]}, "leg"),
    ({"version": 2, "seed": 0, "epoch": 0, "consumed": 3, "layout": [1, 1]}, "layout"),
    ({"version": 1, "seed": 0, "epoch": 0}, "consumed"),
    ({"version": 1, "seed": 0, "epoch": -1, "consumed": 0}, "epoch"),
])
def test_bad_states_are_rejected(state, match):
    with pytest.raises(ConfigError, match=match):
        EpochSampler(10).load_state_dict(state)


def test_bad_constructor_arguments():
    for kw in (dict(mode="random"), dict(last="keep"), dict(batch_size=0), dict(rank=3, world_size=2),
               dict(rank=0, world_size=1, part_index=0)):
        with pytest.raises(ConfigError):
            EpochSampler(10, **kw)
    assert np.array_equal(EpochSampler(5, mode="none").order(), np.arange(5))


def test_state_with_other_order_options_is_rejected():
    """A resumed run with another block size would silently read another order."""
    a = EpochSampler(100, mode="block", order_options={"block_size": 8})
    next(iter(a))
    state = a.state_dict()
    b = EpochSampler(100, mode="block", order_options={"block_size": 16})
    with pytest.raises(ConfigError, match="order options"):
        b.load_state_dict(state)
    c = EpochSampler(100, mode="block", order_options={"block_size": 8})
    c.load_state_dict(state)
    assert c.consumed == a.consumed


def test_version_1_states_resume_where_the_order_is_unchanged_else_refuse():
    # the earlier layout consumed a prefix of the order; 'none' (and small 'global') orders are unchanged
    s = EpochSampler(20, mode="none", rank=0, world_size=2, batch_size=3)
    s.load_state_dict({"version": 1, "seed": 0, "epoch": 0, "consumed": 6})
    rest = []
    for r in range(2):
        t = EpochSampler(20, mode="none", rank=r, world_size=2, batch_size=3)
        t.load_state_dict({"version": 1, "seed": 0, "epoch": 0, "consumed": 6})
        rest += [i for ids, pad in t for i in ids[~pad].tolist()]
    assert sorted(rest) == list(range(6, 20))
    EpochSampler(20, mode="block").load_state_dict({"version": 1, "seed": 0, "epoch": 2, "consumed": 0})
    with pytest.raises(ConfigError, match="version 1"):
        EpochSampler(20, mode="block").load_state_dict({"version": 1, "seed": 0, "epoch": 2, "consumed": 6})


def test_state_records_the_declared_workers_and_a_change_closes_a_leg():
    n, W, B = 101, 2, 4
    ss = [EpochSampler(n, seed=8, mode="block", rank=r, world_size=W, batch_size=B,
                       order_options={"block_size": 6}) for r in range(W)]
    seen = []
    for s in ss:
        s.use_workers(3)
        sls = [s.epoch_slice(k, 3) for k in range(3)]
        seen += [i for sl in sls for b, st in zip(sl.batches(), sl.steps.tolist()) if st < 4
                 for i in b[0][~b[1]].tolist()]
    for s in ss:
        s.consumed = s.consumed_after(0, 4)
    state = ss[0].state_dict()
    assert state["layout"] == [W, 3, B, "pad"] and state["consumed"] == 4 * W * B and state["legs"] == []
    # resume with 2 workers and 3 ranks: the 3-worker layout becomes a closed leg
    new = [EpochSampler(n, seed=8, mode="block", rank=r, world_size=3, batch_size=B,
                        order_options={"block_size": 6}) for r in range(3)]
    for s in new:
        s.load_state_dict(json.loads(json.dumps(state)))
        s.use_workers(2)
        for k in range(2):
            sl = s.epoch_slice(k, 2)
            seen += sl.ids[~sl.is_pad].tolist()
    assert sorted(seen) == list(range(n))
    st2 = new[0].state_dict()
    assert st2["layout"] == [3, 2, B, "pad"] and st2["legs"] == [[W, 3, B, "pad", 4]]


@pytest.mark.parametrize("mode", ["global", "block", "shard"])
def test_a_worker_of_a_huge_job_never_builds_the_whole_order(mode, monkeypatch):
    """Issue 18.1: 100 M records, 2,048 ranks x 8 workers: O(N / (W*K)) ids per process."""
    import tracemalloc

    import cloudrec.reader.orders as orders_mod
    import cloudrec.reader.sampler as sampler_mod

    def boom(*a, **k):
        raise AssertionError("the full epoch order was built")
    monkeypatch.setattr(sampler_mod, "epoch_order", boom)
    monkeypatch.setattr(orders_mod, "epoch_order", boom)
    n = 100_000_000
    tracemalloc.start()
    s = EpochSampler(n, seed=1, mode=mode, rank=5, world_size=2048, batch_size=256, epoch=1)
    s.use_workers(8)
    sl = s.epoch_slice(3, 8)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert sl.ids.dtype == np.int32 and sl.num_batches == -(-(len(s) - 3) // 8)
    assert len(s) == -(-n // (2048 * 256)) and len(np.unique(sl.ids)) == len(sl.ids)
    assert peak < 48 << 20            # the whole order would be 400-800 MB
