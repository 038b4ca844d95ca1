"""Reader layer: epoch orders and partitions (sampler), fetch planning and fetching.

``RecordFetcher(ds).fetch(ids)`` yields records in the order asked, reading
coalesced byte ranges concurrently; see :mod:`cloudrec.reader.fetch`.
"""
from cloudrec.reader.planner import RangePlan, Request, plan_ranges
from cloudrec.reader.fetch import RecordFetcher

__all__ = ["RecordFetcher", "plan_ranges", "RangePlan", "Request"]
