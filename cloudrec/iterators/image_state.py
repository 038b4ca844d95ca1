"""ImageIter's epoch state: the order of each epoch (reset, hard_reset, ``seq``) and the
resumable state, the sampler's (seed, epoch, consumed) plus a rolled-over batch."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from cloudrec.errors import ConfigError

__all__ = ["ResumableImageIter"]


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
        each sample's Generator is seeded as when it was first read (its stream position in
        the previous epoch), so random augmentations come out the same."""
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
            res = self._run(item, (self.seed, self._epoch - 1, 0, p))
            if res[0] != "ok" or res[1] is None:
                continue
            self.write_sample(data, label, i, res[1][0], res[1][1], res[2])
            self._slot_ids.append(rid)
            self._slot_pos.append(p)
            i += 1
        self._cache_data, self._cache_label, self._cache_idx = data, label, i
        self._cache_ids, self._cache_pos = list(self._slot_ids), list(self._slot_pos)
