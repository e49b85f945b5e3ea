"""Data pipelines (grain): 2D toy mixtures, embedded MNIST and TFDS image datasets."""

from gaxp.data.registry import SOURCES, make_dataset

__all__ = ["SOURCES", "make_dataset"]
