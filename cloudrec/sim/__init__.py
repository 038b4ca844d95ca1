"""Simulate one epoch of a distributed job: requests and bytes from the readers' own code,
time from a storage model (latency, bandwidth, per-prefix request rate) and the node's
CPU (``HostModel``: cores, client CPU per request and byte, worker CPU per record).  See
``cloudrec simulate --help``."""
from cloudrec.sim.model import HostModel, JobSpec, StorageModel
from cloudrec.sim.runner import format_report, simulate
from cloudrec.sim.source import SimDataset, from_dataset, synthetic

__all__ = ["JobSpec", "StorageModel", "HostModel", "SimDataset", "simulate", "format_report",
           "synthetic", "from_dataset"]
