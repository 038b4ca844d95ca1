"""``cloudrec index --table OUT --check SHARDS``: does a dataset table still describe its shards?

Opening from a table only compares each `.rec`'s and `.idx`'s size and version
with a listing, which is cheap and catches every rewrite a store reports.  An
audit goes further: it reads every `.idx` again and compares the records (keys,
offsets, lengths), and when the table keeps record CRCs it reads every shard
and compares each record's CRC32, so bytes changed in place without a new
version (bit rot, a tool that rewrote a file and kept its mtime) are found and
named: record id, shard, key and offset.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

MAX_LISTED = 10   # differing records named one by one; the rest are counted


def check_table(urls: Any, table: str, storage_options: Optional[Dict[str, Any]] = None,
                progress: Optional[bool] = None) -> List[str]:
    """What differs between the table at ``table`` and the shards at ``urls`` (empty: it
    matches).  Reads every `.idx`, and every shard too when the table has record CRCs."""
    from cloudrec.dataset import open_dataset
    from cloudrec.dataset.record_crc import record_crcs
    from cloudrec.dataset.shards import expand_urls
    from cloudrec.dataset.table_file import read_table_file, stale_shards
    tf = read_table_file(table, storage_options)
    rec_urls = expand_urls(urls, storage_options)
    if rec_urls != [s.rec_url for s in tf.shards]:
        return [f"the table is for other shards ({len(tf.shards)} from "
                f"{tf.shards[0].rec_url if tf.shards else '-'}), not these {len(rec_urls)}"]
    why = stale_shards(tf, storage_options)   # what a listing sees, as every open checks
    ds = open_dataset(rec_urls, storage_options=storage_options)
    old, new = tf.table, ds.table
    if len(old) != len(new):
        return why + [f"the .idx files list {len(new)} records, the table {len(old)}"]
    for name in ("shard", "key", "offset", "length"):
        a, b = np.asarray(getattr(old, name)), np.asarray(getattr(new, name))
        bad = np.flatnonzero(a != b) if a.dtype == b.dtype else np.arange(len(a))
        if len(bad):
            why.append(f"{len(bad)} record(s) have another {name} in the .idx files, the first "
                       f"record id {int(bad[0])}: {_plain(a[bad[0]])!r} in the table, "
                       f"{_plain(b[bad[0]])!r} now")
    if why or old.crc is None:
        return why
    crcs = record_crcs(ds, progress)
    bad = np.flatnonzero(np.asarray(old.crc) != crcs)
    for rid in bad[:MAX_LISTED].tolist():
        why.append(f"record id {rid} ({ds.shards[int(new.shard[rid])].rec_url}, key "
                   f"{_plain(new.key[rid])}, offset "
                   f"{int(new.offset[rid])}): CRC32 {int(crcs[rid]):08x}, the table says "
                   f"{int(old.crc[rid]):08x}")
    if len(bad) > MAX_LISTED:
        why.append(f"... and {len(bad) - MAX_LISTED} more record(s) whose bytes changed")
    return why


def _plain(v: Any) -> Any:
    """A numpy scalar as the Python value it holds (for messages)."""
    return v.item() if hasattr(v, "item") else v
