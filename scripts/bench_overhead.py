"""Framework overhead: dann's LightningModule + pl.Trainer against a minimal hand-written loop.

    python scripts/bench_overhead.py                      # small defaults (~6 min on a CPU)
    python scripts/bench_overhead.py --steps 500 --repeats 5 --device cuda

Both train the same network (the paper's MNIST net, built by `DALightningModule` from the
default config) on the same in-memory MNIST -> MNIST-M data (the datamodule's uint8 tensors),
64 source + 64 target images per step:

- hand loop: index a random batch of the uint8 tensors, x / 255 - mean, one forward of
  cat(source, target), label CE + domain BCE behind the GRL, SGD (momentum 0.9) step, with the
  paper's lambda and lr schedules set by hand each step;
- dann: `DALightningModule` + `pl.Trainer` as a user runs it (`python train.py callbacks=none
  trainer.limit_val_batches=0`): the datamodule's loader, TensorBoard logging every
  `trainer.log_every_n_steps`, the progress bar; and the same without the logger.

Excluded from both, because the hand loop has neither: validation and checkpoints (the user's
run validates and checkpoints at each epoch's end; the embedded data's epoch is 54 steps, so
the timed steps would cross two or three of them). Three measurements, all printed:

1. Step by step (the headline ratio): dann runs as a user runs it, and after each of its steps
   one step of the hand loop runs (its own copy of the network and data order). dann's step is
   the time from the end of one hand step to the start of the next, everything Lightning and
   the module do included. A shared VM's speed drifts by 10-20 % within seconds, more than the
   difference measured; two neighbouring steps see the same speed. Ratio per repeat = mean hand
   step / mean dann step; the headline is its median over `--repeats`.
2. Alternating whole runs (hand, dann, dann without logger, hand, ...): images/s over the steps
   after `--warmup`, medians over the repeats, each ratio the median of the ratios to the hand
   loop run next to it. Honest but noisy here (runs tens of seconds apart drift apart).
3. The same at `--tiny-batch` (2 + 2) images, where the network's compute is nearly nothing:
   the difference in ms/step is the framework's own cost per step (the Python of Lightning's
   loop, the module's step, logging, the progress bar) and the ratio it implies at full batch.
On a GPU the step-by-step measurement synchronises the device at each step boundary (both loops
alike), so it measures steps without their overlap; read the other two there too.
"""

import argparse
import os
import tempfile
import time
from statistics import mean

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from bench_common import datamodule, machine, make_cfg, median, table
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm

from dann.callbacks import ProgressBar
from dann.grl import grad_reverse
from dann.schedules import grl_sigmoid, lr_annealing


class HandLoop:
    """A minimal PyTorch DANN loop over the datamodule's in-memory tensors, one step per call."""

    def __init__(self, module, dm, steps: int, device: torch.device):
        src, tgt = dm.data.source.train, dm.data.target.train
        self.xs, self.ys = src.inputs.to(device), src.labels.to(device)
        self.xt, self.mean = tgt.inputs.to(device), dm.mean.to(device)
        self.bs, self.steps, self.device = dm.hparams.batch_size, steps, device
        self.fe, self.clf = module.feature_extractor, module.classifier
        self.disc = module.method.discriminator
        params = [p for m in (self.fe, self.clf, self.disc) for p in m.parameters()]
        self.opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
        self.domain = torch.cat([torch.zeros(self.bs), torch.ones(self.bs)]).to(device)
        self.per_epoch = min(len(self.xs), len(self.xt)) // self.bs
        self.step_count, self.batch = 0, self.per_epoch

    def step(self) -> None:
        bs, device = self.bs, self.device
        if self.batch == self.per_epoch:  # a new epoch: new orders
            self.ps = torch.randperm(len(self.xs), device=device)
            self.pt = torch.randperm(len(self.xt), device=device)
            self.batch = 0
        b, self.batch = self.batch, self.batch + 1
        i, j = self.ps[b * bs : (b + 1) * bs], self.pt[b * bs : (b + 1) * bs]
        # index_select, as dann's loader gathers (much faster than indexing, xs[i], on a CPU)
        xs, xt = self.xs.index_select(0, i), self.xt.index_select(0, j)
        x = torch.cat([xs, xt]).float().div_(255).sub_(self.mean)
        p = self.step_count / self.steps
        for g in self.opt.param_groups:
            g["lr"] = 0.01 * lr_annealing(p)
        features = self.fe(x)
        label_loss = F.cross_entropy(self.clf(features[:bs]), self.ys.index_select(0, i))
        d = self.disc(grad_reverse(features, grl_sigmoid(p))).squeeze(1)
        loss = label_loss + F.binary_cross_entropy_with_logits(d, self.domain)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step_count += 1


def now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def hand_loop(module, dm, steps: int, warmup: int, device: torch.device) -> float:
    """images/s of the hand loop run on its own."""
    loop = HandLoop(module, dm, steps, device)
    for step in range(steps):
        if step == warmup:
            start = now(device)
        loop.step()
    return (steps - warmup) * 2 * loop.bs / (now(device) - start)


class PairedHandSteps(pl.Callback):
    """After each of dann's training steps, one step of the hand loop (its own copy of the
    network, its own data order): dann's step is the time from the end of one hand step to the
    start of the next (Lightning's loop, the module's step, logging, the progress bar: all of
    it), and each pair of steps runs at the same machine speed."""

    def __init__(self, hand: HandLoop, warmup: int):
        self.hand, self.warmup = hand, warmup
        self.dann_s: list[float] = []
        self.hand_s: list[float] = []
        self._last: float | None = None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        start = now(module.device)
        timed = trainer.global_step > self.warmup
        if timed:
            self.dann_s.append(start - self._last)
        self.hand.step()
        self._last = now(module.device)
        if timed:
            self.hand_s.append(self._last - start)


class QuietProgressBar(ProgressBar):
    """The progress bar `python train.py` shows in a terminal, drawn into /dev/null (the bar's
    cost is measured; the terminal keeps the results readable)."""

    def __init__(self):
        super().__init__(plain=False)

    def init_train_tqdm(self) -> Tqdm:
        self._devnull = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the bar
        return Tqdm(
            desc=self.train_description,
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=True,
            file=self._devnull,
            smoothing=0,
            bar_format=self.BAR_FORMAT,
        )


class StepTimer(pl.Callback):
    """Wall time from the end of step `warmup` to the end of the last step."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.end, self.steps = warmup, None, None, 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.warmup:
            self.start = now(module.device)
        if trainer.global_step == trainer.max_steps:
            self.end = now(module.device)
            self.steps = trainer.global_step - self.warmup


def dann_run(overrides, steps, warmup, as_user: bool, out: str, extra_callbacks=()) -> float:
    """images/s of `DALightningModule` + `pl.Trainer` from the config, with `python train.py
    callbacks=none`'s progress bar and (as_user) its TensorBoard logger; no checkpoints."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from dann.loggers import build_loggers
    from dann.train import build, resolve_deterministic

    cfg = make_cfg(
        [
            "callbacks=none",
            "trainer.limit_val_batches=0",
            f"trainer.max_steps={steps}",
            "trainer.max_epochs=-1",
            *overrides,
        ],
        out,
    )
    pl.seed_everything(cfg.seed, verbose=False)
    dm, module, _ = build(cfg)
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs.pop("_target_")
    kwargs["plugins"] = [instantiate(p) for p in kwargs.get("plugins") or []]
    kwargs["deterministic"] = resolve_deterministic(cfg)  # as train.py runs (hand loop too)
    timer = StepTimer(warmup)
    trainer = pl.Trainer(
        **kwargs,
        callbacks=[timer, *extra_callbacks, QuietProgressBar()],
        logger=build_loggers(cfg.get("logger")) if as_user else False,
        enable_checkpointing=False,
    )
    trainer.fit(module, datamodule=dm)
    return timer.steps * 2 * cfg.dataset.batch_size / (timer.end - timer.start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps per run")
    parser.add_argument("--warmup", type=int, default=30, help="steps not timed")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each, interleaved")
    parser.add_argument("--tiny-batch", type=int, default=2, help="batch of the cost-per-step run")
    parser.add_argument("--tiny-steps", type=int, default=500, help="steps of that run")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("overrides", nargs="*", help="extra config overrides, e.g. backbone=...")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    # the default trainer, on the device asked for, in fp32 like the hand loop
    # (precision=auto would pick bf16 on some machines; pass overrides to compare)
    overrides = [
        f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}",
        "trainer.precision=32-true",
        "backbone.channels_last=false",
    ]
    overrides += args.overrides

    import logging

    from dann.train import build, resolve_deterministic

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("dann").setLevel(logging.ERROR)
    names = (
        "hand loop (PyTorch)",
        "dann (TensorBoard logger)",
        "dann, no logger",
    )

    def measure(batch: int, steps: int, warmup: int, tmp: str) -> dict[str, list[float]]:
        """images/s of each loop at `batch` + `batch`, interleaved over the repeats."""
        over = [*overrides, f"dataset.batch_size={batch}"]
        cfg = make_cfg(over, tmp)
        dm = datamodule(cfg)
        # the hand loop runs under the same setting as the user's run (Lightning sets it)
        torch.use_deterministic_algorithms(resolve_deterministic(cfg))
        results = {name: [] for name in names}
        for r in range(args.repeats):
            pl.seed_everything(cfg.seed, verbose=False)
            _, module, _ = build(cfg)
            module.to(device).train()
            results[names[0]].append(hand_loop(module, dm, steps, warmup, device))
            results[names[1]].append(dann_run(over, steps, warmup, True, f"{tmp}/u{batch}_{r}"))
            results[names[2]].append(dann_run(over, steps, warmup, False, f"{tmp}/n{batch}_{r}"))
            print(
                f"batch {batch}, repeat {r + 1}/{args.repeats}: "
                + ", ".join(f"{k} {v[-1]:,.0f} img/s" for k, v in results.items()),
                flush=True,
            )
        return results

    def measure_paired(batch: int, steps: int, warmup: int, tmp: str) -> list[PairedHandSteps]:
        """dann as a user runs it, with a hand-loop step after each of its steps."""
        over = [*overrides, f"dataset.batch_size={batch}"]
        cfg = make_cfg(over, tmp)
        dm = datamodule(cfg)
        torch.use_deterministic_algorithms(resolve_deterministic(cfg))
        pairs = []
        for r in range(args.repeats):
            pl.seed_everything(cfg.seed, verbose=False)
            _, module, _ = build(cfg)
            module.to(device).train()
            pair = PairedHandSteps(HandLoop(module, dm, steps, device), warmup)
            dann_run(over, steps, warmup, True, f"{tmp}/p{batch}_{r}", [pair])
            pairs.append(pair)
            print(
                f"paired steps, batch {batch}, repeat {r + 1}/{args.repeats}: hand loop "
                f"{1000 * mean(pair.hand_s):.2f} ms/step, dann {1000 * mean(pair.dann_s):.2f}",
                flush=True,
            )
        return pairs

    with tempfile.TemporaryDirectory() as tmp:
        batch = make_cfg(overrides, tmp).dataset.batch_size
        pairs = measure_paired(batch, args.steps, args.warmup, tmp)
        results = measure(batch, args.steps, args.warmup, tmp)
        tiny = measure(args.tiny_batch, args.tiny_steps, args.tiny_steps // 5, tmp)

    def paired(values: list[float], base: list[float]) -> float:
        """Median over repeats of the ratio to the hand loop run next to it (the machine's
        speed drifts between repeats; neighbours see the same drift)."""
        return median([v / b for v, b in zip(values, base, strict=True)])

    hand = results[names[0]]
    rows = [[n, median(v), min(v), max(v), paired(v, hand)] for n, v in results.items()]
    print(f"\n{machine()}")
    print(
        f"{args.steps} steps ({args.warmup} untimed) x {args.repeats} repeats, "
        f"batch {batch} + {batch}, {args.device}, overrides: {' '.join(overrides)}\n"
    )
    print(table(["loop", "images/s (median)", "min", "max", "ratio to hand loop"], rows))

    # the framework's own cost per step, measured where the step's compute is nearly nothing
    def ms_per_step(rates: list[float], b: int) -> list[float]:
        return [1000 * 2 * b / r for r in rates]

    tiny_hand = ms_per_step(tiny[names[0]], args.tiny_batch)
    step_ms = median(ms_per_step(hand, batch))
    rows = []
    for n in names[1:]:
        extra = median(
            [d - h for d, h in zip(ms_per_step(tiny[n], args.tiny_batch), tiny_hand, strict=True)]
        )
        rows.append([n, extra, step_ms / (step_ms + extra)])
    print(
        f"\nframework cost per step, measured at batch {args.tiny_batch} + {args.tiny_batch} "
        f"({args.tiny_steps} steps; hand loop {median(tiny_hand):.2f} ms/step there), and the "
        f"ratio it implies at batch {batch} (hand loop {step_ms:.1f} ms/step):\n"
    )
    print(table(["loop", "extra ms/step", f"implied ratio at batch {batch}"], rows))

    rows = [
        [
            r + 1,
            1000 * mean(p.hand_s),
            1000 * mean(p.dann_s),
            mean(p.hand_s) / mean(p.dann_s),
            median(p.hand_s) / median(p.dann_s),
        ]
        for r, p in enumerate(pairs)
    ]
    print(
        f"\nstep by step: dann (TensorBoard logger) with one hand-loop step after each of its "
        f"steps, batch {batch} + {batch}, {args.steps} steps ({args.warmup} untimed) per repeat:\n"
    )
    header = ["repeat", "hand loop ms/step", "dann ms/step", "ratio (means)", "ratio (medians)"]
    print(table(header, rows))
    step_ratio = median([row[3] for row in rows])
    print(
        f"\ndann (as a user runs it) / hand loop = {step_ratio:.3f}x step by step, "
        f"{paired(results[names[1]], hand):.3f}x from alternating runs (goal >= 0.95x)"
    )


if __name__ == "__main__":
    main()
