"""``mx.gluon.data``: datasets, samplers and DataLoader (numpy-backed, any fsspec URL)."""
from cloudrec.gluon.data.sampler import (BatchSampler, FilterSampler, IntervalSampler,
                                         RandomSampler, Sampler, SequentialSampler)
from cloudrec.gluon.data.dataset import ArrayDataset, Dataset, RecordFileDataset, SimpleDataset
from cloudrec.gluon.data.dataloader import DataLoader, default_batchify_fn, default_mp_batchify_fn
from cloudrec.gluon.data import vision

__all__ = ["Dataset", "SimpleDataset", "ArrayDataset", "RecordFileDataset", "Sampler",
           "SequentialSampler", "RandomSampler", "BatchSampler", "FilterSampler",
           "IntervalSampler", "DataLoader", "default_batchify_fn", "default_mp_batchify_fn",
           "vision"]
