"""ImageIter's epoch state: the order of each epoch (reset, hard_reset, ``seq``) and the
resumable state, the sampler's (seed, epoch, consumed) plus a rolled-over batch."""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from cloudrec.errors import ConfigError

__all__ = ["ResumableImageIter"]


class _Primed:
    """A record stream whose first record was already read (the next epoch's, opened while
    the workers finished the last one): that record, then the rest of the stream."""

    __slots__ = ("first", "stream")

    def __init__(self, first: Tuple[int, Any], stream: Any) -> None:
        self.first, self.stream = first, stream

    def __iter__(self) -> "_Primed":
        return self

    def __next__(self) -> Tuple[int, Any]:
        if self.first is not None:
            x, self.first = self.first, None
            return x
        return next(self.stream)

    def close(self) -> None:
        self.first = None
        self.stream.close()


class ResumableImageIter:
    """Epochs and ``state_dict``/``load_state_dict`` for ImageIter (a mixin over its order
    and stream)."""

    # ------------------------------------------------------------------------------ epochs
    @property
    def seq(self) -> Optional[list]:
        """The keys of this partition in the current epoch order (None: sequential `.rec`)."""
        if self._order is None:
            return None
        if self._seq_cache is None:
            if self.path_imgrec is None:
                self._seq_cache = [self._list_entries[i][0] for i in self._order.tolist()]
            else:
                self._seq_cache = [self.imgidx[i] for i in self._order.tolist()]
        return self._seq_cache

    def reset(self) -> None:
        """Start the next epoch: reshuffle, rewind (unless roll-over samples are cached)."""
        self._drop_pending()
        self._chain = self._fused_chain()
        self._new_epoch()
        self._load_order()
        if self.last_batch_handle != "roll_over" or self._cache_data is None:
            self._rewind()

    def hard_reset(self) -> None:
        """Reset and forget any rolled-over samples."""
        self._drop_pending()
        self._chain = self._fused_chain()
        self._new_epoch()
        self._load_order()
        self._clear_position()
        self._rewind()

    def _clear_position(self) -> None:
        """No rolled-over partial batch, the stream at its first sample (``__init__``,
        ``hard_reset`` and ``load_state_dict`` start from here)."""
        self._cache_data = self._cache_label = self._cache_idx = None
        self._cache_ids = self._cache_pos = None
        self.cur = 0
        self._allow_read = True

    def _rewind(self) -> None:
        """The record reader (a sequential `.rec`), ``cur`` and the read gate back to the
        stream's start."""
        if self.imgrec is not None:
            self.imgrec.reset()
            self._seq_no = 0
        self.cur = 0
        self._allow_read = True

    def _load_order(self, consumed: int = 0) -> None:
        """This epoch's order (the sampler's), from sample ``consumed`` of this part on."""
        self._delivered, self._batches_out = 0, 0
        self._seq_cache = None
        if self.sampler is None:
            return
        s = self.sampler
        s.set_epoch(self._epoch)
        s.consumed = int(consumed)
        self._start_consumed = int(consumed)
        if s.fixed:
            self._order, self._is_pad = s.order(), None
            self._delivered = int(consumed)
        else:  # this rank's share, from the global position on; pads flagged
            sl = s.epoch_slice()
            self._order, self._is_pad = sl.ids, sl.is_pad
        self.num_image = len(self._order)
        self._adopt_next_stream(consumed)

    # ------------------------------------------------------------------------------ ahead
    def _open_next_epoch(self) -> None:
        """Start reading the next epoch's records now (its order is a pure function of the
        seed and epoch): the workers still have the lookahead to decode, and ``reset()``
        then finds the first records read instead of waiting for a cold stream (~5-10 ms an
        epoch on the bench's local file: planning and the first range read)."""
        s = self.sampler
        if (self._next_stream is not None or s is None or self._order is None
                or self.imgrec is None or self.fetcher is None or self._custom_next_sample):
            return
        self._open_padding()
        epoch = self._epoch + 1
        if s.fixed:
            order = s.order(epoch)
        else:  # a copy: the sampler's own epoch, progress and resumed legs stay untouched
            ahead = copy.copy(s)
            ahead.set_epoch(epoch)
            ahead.consumed = 0
            order = ahead.epoch_slice().ids
        if not len(order):
            return
        stream = self.fetcher.fetch(iter(order.tolist()))
        try:
            first = next(stream)
        except Exception:  # noqa: BLE001 - the epoch reads (and raises) it itself if it comes
            stream.close()
            return
        self._next_stream = (epoch, order, _Primed(first, stream))

    def _open_padding(self) -> None:
        """'pad': the last batch is completed from the epoch's first samples; start reading
        just those (plus a run, for skipped images) while the workers finish the epoch."""
        need = (-len(self._order)) % self.batch_size
        if (self.last_batch_handle != "pad" or not need or self.cur != 0 or self._wrap == 0
                or not self._allow_read):
            return
        end = min(len(self._order), need + self._run_len)
        stream = self.fetcher.fetch(iter(self._order[:end].tolist()))
        try:
            first = next(stream)
        except Exception:  # noqa: BLE001 - read (and raised) again when the padding needs it
            stream.close()
            return
        if self._stream is not None:
            self._stream.close()
        self._stream, self._stream_pos, self._stream_end = _Primed(first, stream), 0, end

    def _adopt_next_stream(self, consumed: int) -> None:
        """Take the stream opened ahead when this epoch's order is the one it reads, else
        close it."""
        ahead, self._next_stream = self._next_stream, None
        if ahead is None:
            return
        epoch, order, stream = ahead
        if (epoch == self._epoch and consumed == 0 and self._stream is None
                and len(order) == len(self._order) and np.array_equal(order, self._order)):
            self._stream, self._stream_pos, self._stream_end = stream, 0, len(order)
        else:
            stream.close()

    def _close_next_stream(self) -> None:
        ahead, self._next_stream = self._next_stream, None
        if ahead is not None:
            ahead[2].close()


    # ------------------------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, Any]:
        """Where the iterator is: the sampler's state (seed, epoch, samples consumed), plus the
        record ids of a rolled-over partial batch.  Under ``part_mode='even'`` it is global
        (load it on any part, with any ``num_parts``); under MXNet's parts it fits the same
        parts.  Without an `.idx` (a sequential `.rec`), ``consumed`` counts records read."""
        if self.sampler is not None:
            state = self.sampler.state_dict()
        else:
            state = {"version": 1, "seed": self.seed, "partition": "sequential"}
        state["epoch"] = int(self._epoch)
        if self.sampler is None or self.sampler.fixed:
            state["consumed"] = int(self._delivered)
        if self._cache_ids is not None and self._cache_data is not None:
            state["rollover"] = [int(x) for x in self._cache_ids]
            state["rollover_pos"] = [int(x) for x in (self._cache_pos or [])]
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Resume after ``state``: the next batch is the one that followed it (same order and
        augmentations); the skipped samples are not decoded."""
        self._drop_pending()
        epoch, consumed = int(state.get("epoch", 0)), int(state.get("consumed", 0))
        if self.sampler is not None:
            if state.get("partition") == "sequential":
                raise ConfigError("this state is of a sequential .rec (no .idx); this iterator "
                                  "reads by index")
            self.sampler.load_state_dict(state)
            self.seed = self.sampler.seed
        elif state.get("partition", "sequential") != "sequential":
            raise ConfigError("this state is of an indexed iterator; this one reads a .rec "
                              "sequentially (give path_imgidx)")
        self._epoch, self._wrap, self._extra = epoch, 0, 0
        self._clear_position()
        if self.sampler is not None:
            self._load_order(consumed)
            self.cur = consumed if self.sampler.fixed else 0
        else:
            self.imgrec.reset()
            self._seq_no, self.cur = 0, 0
            for _ in range(consumed):  # a sequential .rec can only be skipped by reading
                if self.imgrec.read() is None:
                    break
                self._seq_no += 1
            self._delivered = self._seq_no
        if state.get("rollover"):
            self._refill_rollover([int(x) for x in state["rollover"]],
                                  [int(x) for x in state.get("rollover_pos", [])])

    def _refill_rollover(self, ids: List[int], pos: List[int]) -> None:
        """Rebuild a rolled-over partial batch from its record ids (it is completed next);
        each sample's Generator is keyed as when it was first read (the previous epoch, its
        record id), so random augmentations come out the same."""
        if self.sampler is None:
            raise ConfigError("a rolled-over batch of a sequential .rec cannot be restored")
        data = self._obtain_buffer()
        label = np.zeros(self.provide_label[0][1], dtype=np.float32)
        self._slot_ids, self._slot_pos = [], []
        i = 0
        for j, rid in enumerate(ids):
            item = (self._record_item(-1, rid) if self.imgrec is not None
                    else self._list_item(rid, -1))
            p = pos[j] if j < len(pos) and pos[j] >= 0 else (1 << 41) + j
            res = self._run(item, (self.seed, self._epoch - 1, 0, rid))
            if res[0] != "ok" or res[1] is None:
                continue
            self.write_sample(data, label, i, res[1][0], res[1][1], res[2])
            self._slot_ids.append(rid)
            self._slot_pos.append(p)
            i += 1
        self._cache_data, self._cache_label, self._cache_idx = data, label, i
        self._cache_ids, self._cache_pos = list(self._slot_ids), list(self._slot_pos)
