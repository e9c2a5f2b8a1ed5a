"""Input pipeline: dann's in-memory fast path against a torchvision-style per-sample pipeline.

    python scripts/bench_data.py                          # small defaults (~1 min on a CPU)
    python scripts/bench_data.py --repeats 5 --pil-batches 100

Both deliver the same MNIST -> MNIST-M training images (the datamodule's embedded data), 64
source + 64 target per batch, as normalised float tensors (x / 255 - per-channel mean):

- fast path: `DomainAdaptationDataModule.train_dataloader()` (uint8 tensors in memory, a whole
  batch gathered at once) followed by its `on_after_batch_transfer` normalisation;
- per-sample PIL: a Dataset that turns each uint8 image into a PIL image and applies
  torchvision's ToTensor + Normalize, default collate.

Compared at equal use of the cores: on one core (fast path with 1 torch thread against PIL
with 0 workers and 1 torch thread) and on N cores (fast path with N torch threads against PIL
with N worker processes; N = `--cores`, default the machine's). Runs alternate within each
repeat; images/s exclude each loader's first `--skip` batches (worker start-up), and the table
shows medians over `--repeats`.
"""

import argparse
import logging
import os
import tempfile
import time

import torch
from bench_common import datamodule, machine, make_cfg, median, table
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms


class PILImages(Dataset):
    """The torchvision way: one PIL image per item, transformed one at a time."""

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor | None, transform):
        self.inputs, self.labels, self.transform = inputs, labels, transform

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int):
        image = Image.fromarray(self.inputs[i].permute(1, 2, 0).numpy())  # HWC uint8, RGB
        x = self.transform(image)
        return x if self.labels is None else (x, int(self.labels[i]))


def fast_path(dm, epochs: int, skip: int) -> float:
    n, start = 0, None
    for _ in range(epochs):
        for batch, *_ in dm.train_dataloader():
            out = dm.on_after_batch_transfer(batch, 0)
            (xs, _), xt = out["source"], out["target"]
            if start is None:
                skip -= 1
                if skip < 0:
                    start = time.perf_counter()
                continue
            n += len(xs) + len(xt)
    return n / (time.perf_counter() - start)


def pil_path(dm, workers: int, batches: int, skip: int) -> float:
    mean = dm.mean.flatten().tolist()
    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(mean, [1.0] * len(mean))]
    )
    src, tgt = dm.data.source.train, dm.data.target.train
    bs = dm.hparams.batch_size

    def loader(split, labels):
        dataset = PILImages(split.inputs, split.labels if labels else None, transform)
        return DataLoader(dataset, batch_size=bs, shuffle=True, drop_last=True, num_workers=workers)

    n, start = 0, None
    for i, ((xs, _), xt) in enumerate(zip(loader(src, True), loader(tgt, False), strict=False)):
        if i == skip:
            start = time.perf_counter()
        elif i > skip:
            n += len(xs) + len(xt)
        if i == skip + batches:
            break
    return n / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2, help="fast-path epochs per repeat")
    parser.add_argument("--pil-batches", type=int, default=30, help="PIL batches per repeat")
    parser.add_argument("--skip", type=int, default=2, help="untimed first batches")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2, help="N (see above)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. dataset=...")
    args = parser.parse_args()
    logging.getLogger("dann").setLevel(logging.ERROR)

    with tempfile.TemporaryDirectory() as tmp:
        cfg = make_cfg(args.overrides, tmp)
        dm = datamodule(cfg)
        n = args.cores
        runs = {  # name -> (torch threads, measure)
            "fast path (dann), 1 torch thread": (1, lambda: fast_path(dm, args.epochs, args.skip)),
            "per-sample PIL, 0 workers, 1 torch thread": (
                1,
                lambda: pil_path(dm, 0, args.pil_batches, args.skip),
            ),
            f"fast path (dann), {n} torch threads": (
                n,
                lambda: fast_path(dm, args.epochs, args.skip),
            ),
            f"per-sample PIL, {n} workers": (
                n,
                lambda: pil_path(dm, n, args.pil_batches, args.skip),
            ),
        }
        results = {k: [] for k in runs}
        for r in range(args.repeats):
            for name, (threads, measure) in runs.items():
                torch.set_num_threads(threads)
                results[name].append(measure())
            print(
                f"repeat {r + 1}/{args.repeats}: "
                + ", ".join(f"{k} {v[-1]:,.0f} img/s" for k, v in results.items()),
                flush=True,
            )

    names = list(runs)
    rows = [[k, median(v), min(v), max(v)] for k, v in results.items()]
    bs = cfg.dataset.batch_size
    print(f"\n{machine()}")
    print(
        f"{cfg.dataset.name}, batches of {bs} + {bs}, {args.repeats} repeats "
        f"(fast path: {args.epochs} epochs, PIL: {args.pil_batches} batches each)\n"
    )
    print(table(["pipeline", "images/s (median)", "min", "max"], rows))
    one = median(results[names[0]]) / median(results[names[1]])
    many = median(results[names[2]]) / median(results[names[3]])
    print(
        f"\nfast path / per-sample PIL at equal cores: {one:.0f}x on 1 core, {many:.0f}x on {n} "
        "cores (goal >= 20x)"
    )


if __name__ == "__main__":
    main()
