"""Storage layer: fsspec URLs to filesystems, ranged reads, the local shard cache.

Knows bytes and URLs, nothing of images or records' meaning.
"""
from cloudrec.storage.fs import resolve, join_url, strip_protocol
from cloudrec.storage.retry import (RetryPolicy, ShortReadError, ReadTimeoutError,
                                    StorageNotFound, ObjectChangedError, is_transient)
from cloudrec.storage.ranged import RangeReader, make_range_reader
from cloudrec.storage.cache import ShardCache, default_cache_dir
from cloudrec.storage.redact import redact_options, redact_text, redact_url
from cloudrec.storage.writes import WriteTimeoutError, open_output, write_bytes

__all__ = ["resolve", "join_url", "strip_protocol", "RetryPolicy", "ShortReadError",
           "ReadTimeoutError", "StorageNotFound", "is_transient", "RangeReader",
           "make_range_reader", "ShardCache", "default_cache_dir", "ObjectChangedError",
           "redact_url", "redact_options", "redact_text", "open_output", "write_bytes",
           "WriteTimeoutError"]
