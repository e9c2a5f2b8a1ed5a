"""Dataset pairs register here once, by name, and are looked up by name.

A pair loader is `load(root, data_dir, split_seed) -> PairData`; it returns uint8 image tensors
(N, C, H, W) with int64 labels for train/val/test of both domains. The datamodule drops the target
training labels before anything reaches the model.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8, (N, C, H, W)
    labels: torch.Tensor  # int64, (N,)

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class DomainData:
    name: str
    train: Split
    val: Split
    test: Split


@dataclass(frozen=True)
class PairData:
    source: DomainData
    target: DomainData
    num_classes: int


PairLoader = Callable[[str | None, Path, int], PairData]
_PAIRS: dict[str, PairLoader] = {}


def register_pair(name: str) -> Callable[[PairLoader], PairLoader]:
    def add(loader: PairLoader) -> PairLoader:
        if name in _PAIRS:
            raise ValueError(f"dataset pair {name!r} is registered twice")
        _PAIRS[name] = loader
        return loader

    return add


def available_pairs() -> list[str]:
    return sorted(_PAIRS)


def get_pair(name: str) -> PairLoader:
    if name not in _PAIRS:
        choices = ", ".join(available_pairs())
        raise ValueError(f"unknown dataset pair {name!r}; valid choices: {choices}")
    return _PAIRS[name]


def val_size(num_train: int) -> int:
    """Validation images held out of a full training set: 5,000 (of MNIST's 60,000), fewer for
    small sets."""
    return min(5_000, num_train // 10)


def split_indices(n: int, sizes: tuple[int, int], seed: int) -> tuple[torch.Tensor, ...]:
    """A fixed random permutation of range(n) cut into (rest, sizes[0], sizes[1])."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    a, b = sizes
    return perm[: n - a - b], perm[n - a - b : n - b], perm[n - b :]
