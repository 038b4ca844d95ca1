"""Decode -> augment -> batch pipeline: MXNet's aug_default and a threaded batcher."""
from cloudrec.pipeline.augment import DefaultAugmenter
from cloudrec.pipeline.batcher import BatchPipeline
from cloudrec.pipeline.writer import ImageWriter

__all__ = ["DefaultAugmenter", "BatchPipeline", "ImageWriter"]
