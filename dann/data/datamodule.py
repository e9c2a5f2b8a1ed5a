"""`DomainAdaptationDataModule`: a registered dataset pair as Lightning dataloaders.

Training batches are `{"source": (x, y), "target": x}`: the target training set is built without
labels, so no method can see them. Validation and test yield `(x, y)` from a source loader
(dataloader_idx 0) and a target loader (dataloader_idx 1); target labels there are for
reporting only. Images stay uint8 in memory and are gathered a whole batch per index tensor
(no per-sample Python); `on_after_batch_transfer` turns them into floats on the device and
subtracts the per-channel mean of the pooled source+target training images (the paper's
preprocessing).
"""

import logging
from pathlib import Path

import pytorch_lightning as pl
import torch
from lightning_utilities.core.apply_func import apply_to_collection
from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset

from dann.data.registry import DomainData, PairData, Split, get_pair

log = logging.getLogger(__name__)

DOMAINS = ("source", "target")  # dataloader_idx 0 and 1 in validation and test


class InMemoryDataset(Dataset):
    """uint8 images (+ labels) held in memory; `__getitems__` returns a whole batch at once.
    With `labels=None` (the target training set) items are images only."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.__getitems__([index])

    def __getitems__(self, indices: list[int]):
        idx = torch.as_tensor(indices)
        return self.images[idx] if self.labels is None else (self.images[idx], self.labels[idx])


def _already_batched(batch):
    return batch


def _as_channels(split: Split, channels: int) -> Split:
    have = split.images.shape[1]
    if have == channels:
        return split
    if have == 1:
        return Split(split.images.expand(-1, channels, -1, -1).contiguous(), split.labels)
    if channels == 1:  # ITU-R 601 luma
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        grey = (split.images.float() * w).sum(1, keepdim=True).round().to(torch.uint8)
        return Split(grey, split.labels)
    raise ValueError(f"cannot convert {have}-channel images to {channels} channels")


class DomainAdaptationDataModule(pl.LightningDataModule):
    def __init__(
        self,
        name: str,
        root: str | None = None,
        data_dir: str = "data",
        batch_size: int = 64,
        eval_batch_size: int = 512,
        channels: int = 3,
        image_size: int = 28,
        num_classes: int = 10,
        split_seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.loader = get_pair(name)  # unknown names fail here, before any data is read
        self.data: PairData | None = None
        self.mean: torch.Tensor | None = None

    def prepare_data(self) -> None:
        """Build the caches once per node (Lightning runs this on one process only)."""
        hp = self.hparams
        self.loader(hp.root, Path(hp.data_dir), hp.split_seed)

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        hp = self.hparams
        pair = self.loader(hp.root, Path(hp.data_dir), hp.split_seed)
        if pair.num_classes != hp.num_classes:
            raise ValueError(
                f"dataset {hp.name} has {pair.num_classes} classes but "
                f"dataset.num_classes={hp.num_classes}"
            )
        pair = PairData(self._adapt(pair.source), self._adapt(pair.target), pair.num_classes)
        pooled = torch.cat([pair.source.train.images, pair.target.train.images])
        self.mean = pooled.float().mean(dim=(0, 2, 3)).div(255).view(1, -1, 1, 1)
        self.data = pair
        for d in (pair.source, pair.target):
            log.info(
                "%s %s: train %d / val %d / test %d images of %s",
                hp.name,
                d.name,
                len(d.train),
                len(d.val),
                len(d.test),
                tuple(d.train.images.shape[1:]),
            )

    def _adapt(self, domain: DomainData) -> DomainData:
        size = self.hparams.image_size
        splits = {}
        for k in ("train", "val", "test"):
            split = _as_channels(getattr(domain, k), self.hparams.channels)
            if tuple(split.images.shape[2:]) != (size, size):
                raise ValueError(
                    f"{domain.name} images are {tuple(split.images.shape[2:])}, "
                    f"dataset.image_size={size}"
                )
            splits[k] = split
        return DomainData(domain.name, **splits)

    def _loader(self, dataset: Dataset, batch_size: int, train: bool) -> DataLoader:
        # plain batch_size/shuffle so Lightning can swap in a DistributedSampler under DDP;
        # the fetcher still calls dataset.__getitems__ once per batch
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train,
            drop_last=train,
            collate_fn=_already_batched,
            num_workers=self.hparams.num_workers,
        )

    def train_dataloader(self) -> CombinedLoader:
        src, tgt = self.data.source.train, self.data.target.train
        bs = self.hparams.batch_size
        return CombinedLoader(
            {
                "source": self._loader(InMemoryDataset(src.images, src.labels), bs, train=True),
                "target": self._loader(InMemoryDataset(tgt.images), bs, train=True),  # no labels
            },
            mode="max_size_cycle",
        )

    def _eval_loaders(self, split: str) -> list[DataLoader]:
        parts = [getattr(self.data.source, split), getattr(self.data.target, split)]
        bs = self.hparams.eval_batch_size
        return [self._loader(InMemoryDataset(s.images, s.labels), bs, train=False) for s in parts]

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("val")

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("test")

    def state_dict(self) -> dict:
        """Saved in checkpoints, so a checkpoint carries the preprocessing it was trained with."""
        return {"mean": self.mean.flatten().tolist() if self.mean is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if state.get("mean") is not None:
            self.mean = torch.tensor(state["mean"]).view(1, -1, 1, 1)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [0, 255] -> float [0, 1] minus the pooled per-channel training mean."""
        return images.float().div_(255).sub_(self.mean.to(images.device))

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        return apply_to_collection(
            batch, torch.Tensor, lambda t: self.normalize(t) if t.dtype == torch.uint8 else t
        )
