"""Datasets of the plugin; importing this package registers them in BasicSR's DATASET_REGISTRY."""
from .arbitrary_scale_dataset import ArbitraryScaleSRDataset
from .benchmark_dataset import SRBenchmarkDataset

__all__ = ['ArbitraryScaleSRDataset', 'SRBenchmarkDataset']
