"""Storage layer: fsspec URLs to filesystems, ranged reads, the local shard cache.

Knows bytes and URLs, nothing of images or records' meaning.
"""
from cloudrec.storage.fs import resolve, join_url, strip_protocol

__all__ = ["resolve", "join_url", "strip_protocol"]
