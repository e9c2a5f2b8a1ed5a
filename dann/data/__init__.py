"""Data: dataset pairs (registered by name) and the datamodule that serves them."""

from dann.data import (
    amazon,  # noqa: F401  (registers amazon_reviews)
    folders,  # noqa: F401  (registers office31, folder, synsigns_to_gtsrb)
    mnistm,  # noqa: F401  (registers mnist_to_mnistm)
    sequences,  # noqa: F401  (registers sequences)
    svhn,  # noqa: F401  (registers svhn_to_mnist)
    syndigits,  # noqa: F401  (registers syndigits_to_svhn)
    table,  # noqa: F401  (registers table)
    text,  # noqa: F401  (registers text)
    toy,  # noqa: F401  (registers moons)
    usps,  # noqa: F401  (registers mnist_to_usps, usps_to_mnist, *_digits)
)
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
