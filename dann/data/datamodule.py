"""`DomainAdaptationDataModule`: a registered dataset pair as Lightning dataloaders.

Training batches are `{"source": (x, y), "target": x}`: the target training set is built without
labels, so no method can see them (the target oracle, an upper bound, instead trains its
labelled stream on the target). Validation and test yield `(x, y)` from a source loader
(dataloader_idx 0) and a target loader (dataloader_idx 1); target labels there are for
reporting only.

In-memory splits (`Split`) stay uint8 and are gathered a whole batch per index tensor (no
per-sample Python); `on_after_batch_transfer` turns images into floats on the device and
subtracts the per-channel mean of the pooled source+target training images (the paper's
preprocessing). Dataset-backed splits (folders) go through ordinary DataLoader workers.

In-memory training batches come from `InMemoryBatches`: the order of each pass is a pure
function of (seed, epoch, pass), each DDP rank takes its own shard of it, and the position
is saved in checkpoints (Lightning's stateful-loader protocol), so a run stopped mid-epoch
resumes on exactly the batch it would have drawn next.
"""

import logging
from dataclasses import replace
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from lightning_utilities.core.apply_func import apply_to_collection
from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset, SequentialSampler

from dann.data.download import fetch_first
from dann.data.label_sets import LabelSets
from dann.data.registry import UNLABELLED, DomainData, PairData, PairSpec, Split, get_pair
from dann.data.sources import sources_for
from dann.errors import ConfigError, InvalidDataError

log = logging.getLogger(__name__)

DOMAINS = ("source", "target")  # dataloader_idx 0 and 1 in validation and test


class InMemoryDataset(Dataset):
    """Tensors held in memory; `__getitems__` returns a whole batch at once.
    With `labels=None` (the target training set) items are inputs only."""

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor | None = None):
        self.inputs, self.labels = inputs, labels

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int):
        return self.__getitems__([index])

    def __getitems__(self, indices: list[int]):
        return _rows(self.inputs, self.labels, torch.as_tensor(indices))


class InputsOnly(Dataset):
    """A labelled dataset with its labels dropped (the target training set)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset[index][0]


class InMemoryBatches:
    """Training batches of in-memory tensors: a whole batch per index gather, no workers.

    Pass `k` of epoch `e` visits every sample once in the order `randperm(n)` drawn from a
    generator seeded with (seed, e, k): the global RNG is never touched, so the data order is
    the same whatever else consumed random numbers. Under DDP each of `world_size` ranks takes
    every `world_size`-th index of that order (equal shards, whole batches). `progress` tells
    `state_dict` how many batches of this epoch the trainer has consumed (the fetcher
    prefetches, so the iterator's own count would be one ahead). `fixed`: the same order every
    epoch and pass (Lightning's overfit_batches: the same first batches every epoch); it shows
    Lightning a SequentialSampler, which that mode then leaves alone."""

    def __init__(
        self,
        inputs: torch.Tensor,
        labels: torch.Tensor | None,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        progress=None,
        fixed: bool = False,
    ):
        self.inputs, self.labels, self.batch_size, self.seed = inputs, labels, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.progress = progress  # () -> (epoch, batches consumed, batches per epoch)
        self.fixed = fixed
        # Lightning calls `loader.sampler.set_epoch(epoch)` every epoch
        self.sampler = SequentialSampler(self) if fixed else self
        self.epoch, self._pass, self._skip = 0, 0, 0

    def __len__(self) -> int:
        return len(self.inputs) // self.world_size // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self._pass = epoch, 0

    def order(self, epoch: int, pass_: int) -> torch.Tensor:
        """This rank's sample indices for pass `pass_` of `epoch` (whole batches only)."""
        if self.fixed:
            epoch, pass_ = 0, 0
        g = torch.Generator().manual_seed(hash((self.seed, epoch, pass_)) & 0x7FFF_FFFF)
        shard = torch.randperm(len(self.inputs), generator=g)[self.rank :: self.world_size]
        return shard[: len(self) * self.batch_size]

    def __iter__(self):
        order, skip = self.order(self.epoch, self._pass).to(self.inputs.device), self._skip
        self._pass, self._skip = self._pass + 1, 0
        for idx in order[skip * self.batch_size :].split(self.batch_size):
            yield _rows(self.inputs, self.labels, idx)

    def state_dict(self) -> dict:
        epoch, consumed, per_epoch = self.progress() if self.progress else (self.epoch, 0, 1)
        if consumed >= per_epoch:  # saved at the end of an epoch: resume on the next one
            epoch, consumed = epoch + 1, 0
        return {"epoch": epoch, "pass": consumed // len(self), "batch": consumed % len(self)}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self._pass, self._skip = state["epoch"], state["pass"], state["batch"]


def _rows(inputs: torch.Tensor, labels: torch.Tensor | None, idx: torch.Tensor):
    """Rows `idx` of the inputs (and labels, if any). index_select copies whole rows; indexing
    (`inputs[idx]`) walks them element by element: 16 against 122 microseconds for 64 uint8
    28 x 28 RGB images on a CPU, per domain and step."""
    x = inputs.index_select(0, idx)
    return x if labels is None else (x, labels.index_select(0, idx))


def _already_batched(batch):
    return batch


def adapt_images(split: Split, channels: int | None, size: int | None) -> Split:
    """Convert uint8 images to `channels` (grey <-> RGB) and `size` x `size` (bilinear)."""
    x = split.inputs
    if not split.is_image:
        return split
    if channels and x.shape[1] != channels:
        if x.shape[1] == 1:
            x = x.expand(-1, channels, -1, -1)
        elif channels == 1:  # ITU-R 601 luma
            w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            x = (x.float() * w).sum(1, keepdim=True).round().to(torch.uint8)
        else:
            raise ValueError(f"cannot convert {x.shape[1]}-channel images to {channels}")
    if size and tuple(x.shape[2:]) != (size, size):
        x = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True)
        x = x.round().clamp(0, 255).to(torch.uint8)
    return Split(x.contiguous(), split.labels)


class DomainAdaptationDataModule(pl.LightningDataModule):
    def __init__(
        self,
        name: str,
        root: str | None = None,
        data_dir: str = "data",
        batch_size: int = 64,
        eval_batch_size: int = 512,
        channels: int | None = 3,
        image_size: int | None = 28,
        num_classes: int = 10,
        split_seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool = False,
        normalize: str | dict = "pooled_mean",
        augment_shift: int = 0,
        train_on_target_labels: bool = False,
        download: bool = False,
        mirrors: list[str] | tuple[str, ...] = (),
        source_classes: list[int] | None = None,
        target_classes: list[int] | None = None,
        **options,
    ):
        """`options`: pair-specific keys of the dataset config, handed to the pair's loader.
        `normalize`: `pooled_mean` (the paper: subtract the per-channel mean of the pooled
        source+target training images), `per_domain` (each domain standardised with its own
        training images' per-channel mean and std), or fixed values
        `{source: {mean: [...], std: [...]}, target: {...}}` (on the [0, 1] scale).
        `augment_shift`: training images (both domains) are shifted by up to this many pixels
        (0: no augmentation).
        `train_on_target_labels` is for the target oracle only (an upper bound).
        `download`: fetch and verify the pair's files into `root` first (dann.data.sources),
        trying `mirrors` (base URLs) before the built-in ones.
        `source_classes`, `target_classes`: the classes each domain keeps (null: all), for
        partial, open-set and universal adaptation (dann.data.label_sets)."""
        super().__init__()
        self.save_hyperparameters()
        self.loader = get_pair(name)  # unknown names fail here, before any data is read
        self.spec = PairSpec(name, root, Path(data_dir), split_seed, image_size, channels, options)
        self.data: PairData | None = None
        self._prepared: PairData | None = None  # loaded by prepare_data in this process
        self.mean: torch.Tensor | None = None  # normalize=pooled_mean
        self.scale: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None  # per domain
        self._train_seed: int | None = None  # the run's seed, read by train_dataloader
        if isinstance(normalize, str) and normalize not in NORMALIZE:
            raise ConfigError(
                f"dataset.normalize={normalize!r}: choose {' or '.join(NORMALIZE)}, or give "
                "{source: {mean: [...], std: [...]}, target: {mean: [...], std: [...]}}"
            )
        if isinstance(normalize, dict):
            self.scale = _fixed_scale(normalize)
        if download and root is None:
            raise ConfigError(
                "dataset.download=true needs dataset.root=DIR: the folder the files go to"
            )

    def prepare_data(self) -> None:
        """Build the caches once per node (Lightning runs this on one process only). That
        process keeps what it loaded for `setup`; the others read the caches there."""
        if self.data is None and self._prepared is None:
            if self.hparams.download:
                for sources in sources_for(self.hparams.name, self.spec.options):
                    fetch_first(sources, self.hparams.root, mirrors=self.hparams.mirrors)
            self._prepared = self.loader(self.spec)

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        hp = self.hparams
        pair, self._prepared = self._prepared or self.loader(self.spec), None
        if hp.num_classes is not None and pair.num_classes != hp.num_classes:
            raise ConfigError(
                f"dataset {hp.name} has {pair.num_classes} classes but "
                f"dataset.num_classes={hp.num_classes}: set dataset.num_classes="
                f"{pair.num_classes} (null: read from the data), or use data with the classes "
                "the model was trained on"
            )
        sets = LabelSets.from_config(hp.source_classes, hp.target_classes, pair.num_classes)
        pair = sets.apply(pair)
        pair = replace(pair, source=self._adapt(pair.source), target=self._adapt(pair.target))
        if hp.train_on_target_labels:
            log.warning("TARGET ORACLE: the labelled training stream is the target training set")
            target_train = pair.target.train
            if isinstance(target_train, Split) and (target_train.labels == UNLABELLED).any():
                raise InvalidDataError(
                    f"method=target_oracle trains on the target labels, and {hp.name}'s target "
                    "training set has none: give a target file with the label column, or "
                    "choose another method"
                )
        trains = [pair.source.train, pair.target.train]
        world = self.trainer.world_size if self.trainer else 1
        for domain, split in zip(DOMAINS, trains, strict=True):
            too_small = isinstance(split, Split) and len(split) < hp.batch_size * world
            if stage == "fit" and too_small:
                raise ConfigError(
                    f"dataset.batch_size={hp.batch_size} (x {world} process(es)) is more than the "
                    f"{len(split)} {domain} training examples of {hp.name}: no whole batch, an "
                    "empty epoch; lower dataset.batch_size"
                )
        if all(isinstance(s, Split) and s.is_image for s in trains):
            if hp.normalize == "pooled_mean":
                pooled = torch.cat([s.inputs for s in trains])
                self.mean = pooled.float().mean(dim=(0, 2, 3)).div(255).view(1, -1, 1, 1)
            elif hp.normalize == "per_domain":
                self.scale = {
                    d: _channel_stats(s.inputs) for d, s in zip(DOMAINS, trains, strict=True)
                }
        self.data = pair
        for d in (pair.source, pair.target):
            log.info(
                "%s %s: train %d / val %d / test %d",
                hp.name,
                d.name,
                len(d.train),
                len(d.val),
                len(d.test),
            )

    def sizes_from_data(self) -> dict[str, int]:
        """The `input_size` and `num_classes` the dataset config leaves to the data (null there:
        tables, sequences, text), read from the pair, which is loaded once here and kept for
        `setup`; recorded in the hyper-parameters, so checkpoints hold the numbers."""
        wanted = [k for k in ("input_size", "num_classes") if k in self.hparams]
        wanted = [k for k in wanted if self.hparams[k] is None]
        if not wanted:
            return {}
        if self._prepared is None:
            self._prepared = self.loader(self.spec)
        pair = self._prepared
        found = {"num_classes": pair.num_classes}
        if "input_size" in wanted:  # feature pairs: held as tensors (image folders are files)
            found["input_size"] = pair.input_size or int(pair.source.train.inputs.shape[-1])
        for key in wanted:  # both: Lightning logs the initial ones, checkpoints the current
            self.hparams[key] = self._hparams_initial[key] = found[key]
        return {k: found[k] for k in wanted}

    def _adapt(self, domain: DomainData) -> DomainData:
        hp = self.hparams
        splits = {
            k: adapt_images(s, hp.channels, hp.image_size) if isinstance(s, Split) else s
            for k, s in (("train", domain.train), ("val", domain.val), ("test", domain.test))
        }
        return DomainData(domain.name, **splits)

    def _loader(self, split: Split | Dataset, batch_size: int, train: bool, labels=True):
        if isinstance(split, Split):
            dataset = InMemoryDataset(split.inputs, split.labels if labels else None)
            collate, workers = _already_batched, 0  # one tensor gather per batch
        else:
            dataset = split if labels else InputsOnly(split)
            collate, workers = None, self.hparams.num_workers
        # plain batch_size/shuffle so Lightning can swap in a DistributedSampler under DDP
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train,
            drop_last=train,
            collate_fn=collate,
            num_workers=workers,
            # pinned host memory only speeds copies to an accelerator: without one, torch warns
            pin_memory=self.hparams.pin_memory and self._copies_to_accelerator(),
            persistent_workers=workers > 0,
        )

    def _copies_to_accelerator(self) -> bool:
        """Whether batches go to an accelerator: the trainer's device, else whether CUDA exists."""
        if self.trainer is not None:
            return self.trainer.strategy.root_device.type != "cpu"
        return torch.cuda.is_available()

    def _train_loader(self, split: Split | Dataset, labels: bool, seed: int):
        if not isinstance(split, Split):
            return self._loader(split, self.hparams.batch_size, train=True, labels=labels)
        trainer = self.trainer
        # held once on the training device (a GPU when there is one): batches are gathered
        # there, and Lightning's host-to-device copy of each batch becomes a no-op
        device = trainer.strategy.root_device if trainer else torch.device("cpu")
        return InMemoryBatches(
            split.inputs.to(device),
            split.labels.to(device) if labels else None,
            self.hparams.batch_size,
            seed=seed,
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
            progress=self._progress if trainer else None,
            fixed=bool(trainer and trainer.overfit_batches),  # debug=overfit: the same batches
        )

    def _progress(self) -> tuple[int, int, int]:
        """(epoch, training batches consumed in it, batches per epoch), from the trainer."""
        t = self.trainer
        consumed = t.fit_loop.epoch_loop.batch_progress.current.processed
        return t.current_epoch, consumed, t.num_training_batches

    def train_dataloader(self) -> CombinedLoader:
        src, tgt = self.data.source.train, self.data.target.train
        labelled = tgt if self.hparams.train_on_target_labels else src
        seed = torch.initial_seed()  # the run's seed (seed_everything), the same on every rank
        self._train_seed = seed
        return CombinedLoader(
            {
                "source": self._train_loader(labelled, labels=True, seed=seed),
                "target": self._train_loader(tgt, labels=False, seed=seed + 1),
            },
            mode="max_size_cycle",
        )

    def _eval_loaders(self, split: str) -> list[DataLoader]:
        parts = [getattr(self.data.source, split), getattr(self.data.target, split)]
        return [self._loader(s, self.hparams.eval_batch_size, train=False) for s in parts]

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("val")

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("test")

    def state_dict(self) -> dict:
        """Saved in checkpoints, so a checkpoint carries the preprocessing it was trained with."""
        scale = None
        if self.scale is not None:
            scale = {
                d: {"mean": m.flatten().tolist(), "std": s.flatten().tolist()}
                for d, (m, s) in self.scale.items()
            }
        return {
            "mean": self.mean.flatten().tolist() if self.mean is not None else None,
            "scale": scale,
            "preprocessing": self.data.preprocessing if self.data is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("mean") is not None:
            self.mean = torch.tensor(state["mean"]).view(1, -1, 1, 1)
        if state.get("scale") is not None:
            self.scale = _fixed_scale(state["scale"])
        fitted = state.get("preprocessing")
        if fitted is not None and (self.data is None or self.data.preprocessing != fitted):
            # the checkpoint's statistics / vocabulary, not ones fitted on the data at hand
            self.spec = replace(self.spec, options={**self.spec.options, "preprocessing": fitted})
            if self.data is not None:
                self.data = None
                self.setup()

    def normalize(self, images: torch.Tensor, domain: str = "target") -> torch.Tensor:
        """uint8 [0, 255] -> float [0, 1], then minus the pooled per-channel training mean, or
        standardised with `domain`'s mean and std (see `normalize` in __init__)."""
        x = images.float().div_(255)
        if self.scale is not None:
            mean, std = self.scale[domain]
            if mean.device != x.device:  # moved once, not copied to the GPU every batch
                self.scale[domain] = mean, std = mean.to(x.device), std.to(x.device)
            return x.sub_(mean).div_(std)
        if self.mean is None:
            return x
        if self.mean.device != x.device:
            self.mean = self.mean.to(x.device)
        return x.sub_(self.mean)

    def _prepare(self, data, domain: str, train: bool = False, generator=None):
        """Normalise the uint8 images in `data` (a tensor or a tuple) as `domain`'s; training
        batches are also augmented (shifts drawn from `generator`, else the global RNG)."""

        def image(t: torch.Tensor) -> torch.Tensor:
            x = self.normalize(t, domain)
            if train and self.hparams.augment_shift:
                x = random_shift(x, self.hparams.augment_shift, generator)
            return x

        return apply_to_collection(
            data, torch.Tensor, lambda t: image(t) if t.dtype == torch.uint8 else t
        )

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        # training batches are gathered on the training device already (InMemoryBatches):
        # skip Lightning's generic walk over the batch, which moves nothing
        if isinstance(batch, dict) and all(
            t.device == device for t in (*batch["source"], batch["target"])
        ):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if isinstance(batch, dict):  # a training batch: {"source": (x, y), "target": x}
            # the target oracle's labelled stream holds target images
            labelled = "target" if self.hparams.train_on_target_labels else "source"
            domains = {"source": labelled, "target": "target"}
            g = self._augment_generator(batch["target"].device)
            return {k: self._prepare(v, domains[k], True, g) for k, v in batch.items()}
        return self._prepare(batch, DOMAINS[dataloader_idx])

    def _augment_generator(self, device: torch.device) -> torch.Generator | None:
        """The generator a training batch's augmentation draws from, seeded with (run seed,
        rank, epoch, batch of the epoch): like the batch order, a pure function of the position
        in the run, so a resumed run draws the shifts an uninterrupted one did. (The global RNG
        is restored only when the first resumed batch starts, after its augmentation ran.)
        None (the global RNG) without augmentation or outside `fit`."""
        trainer = self.trainer
        if not self.hparams.augment_shift or trainer is None or not trainer.training:
            return None
        epoch, consumed, _ = self._progress()
        seed = torch.initial_seed() if self._train_seed is None else self._train_seed
        key = hash((seed, trainer.global_rank, epoch, consumed)) & 0x7FFF_FFFF
        return torch.Generator(device=device).manual_seed(key)

    def unlabelled_batches(self, domain: str, device: torch.device, max_samples: int | None):
        """`domain`'s training inputs, normalised, in order, in evaluation-sized batches (the
        data AdaBN re-estimates the statistics from; no labels are read)."""
        split = getattr(self.data, domain).train
        size, seen = self.hparams.eval_batch_size, 0
        if isinstance(split, Split):
            batches = (split.inputs[i : i + size] for i in range(0, len(split.inputs), size))
        else:
            batches = self._loader(split, size, train=False, labels=False)
        for x in batches:
            if max_samples is not None and seen >= max_samples:
                return
            seen += len(x)
            yield self._prepare(x.to(device), domain)


NORMALIZE = ("pooled_mean", "per_domain")


def _channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images, on the [0, 1] scale, shaped (1, C, 1, 1)."""
    x = images.float().div(255).transpose(0, 1).flatten(1)
    return x.mean(1).view(1, -1, 1, 1), x.std(1).view(1, -1, 1, 1)


def _fixed_scale(values: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{source: {mean, std}, target: {mean, std}} -> per-domain (1, C, 1, 1) tensors."""
    if set(values) != set(DOMAINS):
        raise ConfigError(f"dataset.normalize needs values for {DOMAINS}, got {sorted(values)}")
    out = {}
    for d, v in values.items():
        if not isinstance(v, dict) or set(v) != {"mean", "std"}:
            raise ConfigError(f"dataset.normalize.{d} needs mean and std (one value per channel)")
        mean = torch.tensor(v["mean"], dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(v["std"], dtype=torch.float32).view(1, -1, 1, 1)
        if (std <= 0).any():
            raise ConfigError(f"dataset.normalize.{d}.std must be > 0, got {v['std']}")
        out[d] = mean, std
    return out


def random_shift(
    images: torch.Tensor, max_shift: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Each image translated by its own random (dy, dx) in [-max_shift, max_shift], the border
    repeated (one gather for the whole batch, on the images' device; `generator`, on that
    device, or else the global RNG, draws the shifts)."""
    n, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4, mode="replicate")
    shifts = torch.randint(
        0, 2 * max_shift + 1, (2, n, 1), device=images.device, generator=generator
    )
    rows = torch.arange(h, device=images.device) + shifts[0]  # (n, h)
    cols = torch.arange(w, device=images.device) + shifts[1]  # (n, w)
    batch = torch.arange(n, device=images.device).view(n, 1, 1)
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (n, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous()
