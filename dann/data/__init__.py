"""Data: dataset pairs (registered by name) and the datamodule that serves them."""

from dann.data import mnistm  # noqa: F401  (registers mnist_to_mnistm)
from dann.data.datamodule import DOMAINS, DomainAdaptationDataModule, InMemoryDataset
from dann.data.registry import DomainData, PairData, Split, available_pairs, get_pair

__all__ = [
    "DOMAINS",
    "DomainAdaptationDataModule",
    "DomainData",
    "InMemoryDataset",
    "PairData",
    "Split",
    "available_pairs",
    "get_pair",
]
