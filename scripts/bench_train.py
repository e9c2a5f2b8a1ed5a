"""Time to accuracy (and epoch time) of precision / memory-layout settings, one subprocess each.

    python scripts/bench_train.py                                   # CPU, small defaults
    python scripts/bench_train.py --threshold 0.6 --max-epochs 30 --repeats 3
    python scripts/bench_train.py --device cuda --configs fp32,bf16,bf16_cl,fp16,bf16_cl_compile
    python scripts/bench_train.py --epoch-timing --device cuda     # 60k + 60k images per epoch
    python scripts/bench_train.py --epoch-timing --device cuda \
        --configs best_bf16_cl,big_batch,big_batch_compile          # the GPU path, 1024 + 1024
    python scripts/bench_train.py --configs paper,best,best_bf16_cl --threshold 0.874 \
        --max-epochs 30 --budget-s 300                              # recipes: time to fungtion's

Time to accuracy: DANN on MNIST -> MNIST-M (the default config, embedded data offline), wall
time from the start of training until val/target_acc first reaches `--threshold` (validated
every `--val-every` steps; validation time counts), capped at `--budget-s` per run. val/target
_acc uses target labels: it is an oracle number, used here only as a stopwatch.

--epoch-timing: instead, the wall time of one training epoch of 60,000 source + 60,000 target
images (the size of MNIST / MNIST-M) through the paper's network, on SYNTHETIC uint8 images of
that shape (random pixels and labels: a timing of data of that shape, not a training result);
`--epoch-fraction` times a part of it and scales up.

Every configuration runs in its own Python process (so peak RSS is per configuration), the
configurations alternate within each repeat, and the table shows medians over `--repeats`.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl

CONFIGS = {  # name -> config overrides
    "fp32": ["trainer.precision=32-true"],
    # glibc's malloc defaults: freed memory returned to the OS, faulted back every step
    "fp32_malloc_default": ["trainer.precision=32-true", "keep_host_memory=false"],
    # recipes (README, Accuracy): the paper's (the default config) and the best preset
    "paper": ["trainer.precision=32-true"],
    "best": ["experiment=best_mnist_to_mnistm", "trainer.precision=32-true"],
    "best_bf16_cl": [
        "experiment=best_mnist_to_mnistm",
        "trainer.precision=bf16-mixed",
        "backbone.channels_last=true",
    ],
    # the GPU path: 1024 + 1024 images a step (precision auto)
    "big_batch": ["experiment=big_batch_mnist_to_mnistm"],
    "big_batch_compile": ["experiment=big_batch_mnist_to_mnistm", "backbone.compile=true"],
    "bf16": ["trainer.precision=bf16-mixed"],
    "bf16_cl": ["trainer.precision=bf16-mixed", "backbone.channels_last=true"],
    "fp16": ["trainer.precision=16-mixed"],  # CUDA only
    "fp32_compile": ["trainer.precision=32-true", "backbone.compile=true"],
    "bf16_cl_compile": [
        "trainer.precision=bf16-mixed",
        "backbone.channels_last=true",
        "backbone.compile=true",
    ],
}


def worker(args) -> dict:
    """One configuration in this process; returns what the parent tabulates."""
    import logging

    import torch
    from bench_common import make_cfg
    from omegaconf import open_dict

    from dann.train import build

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("dann").setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    accel = "gpu" if args.device == "cuda" else "cpu"
    overrides = [
        f"trainer.accelerator={accel}",
        "callbacks=none",
        f"trainer.max_epochs={args.max_epochs}",
        "+trainer.num_sanity_val_steps=0",
        "+trainer.enable_progress_bar=false",
        "+trainer.enable_model_summary=false",
        *CONFIGS[args.worker],
        *args.overrides,
    ]
    if args.epoch_timing:
        overrides += ["trainer.max_epochs=1", "trainer.limit_val_batches=0"]
    else:
        overrides += [f"+trainer.val_check_interval={args.val_every}"]
    out = tempfile.mkdtemp(prefix="bench_train_")
    cfg = make_cfg(overrides, out)
    per_epoch = 60_000 // cfg.dataset.batch_size
    steps = max(2, int(per_epoch * args.epoch_fraction))
    if args.epoch_timing and steps < per_epoch:
        with open_dict(cfg):
            cfg.trainer.limit_train_batches = steps  # time a part of the epoch, scale up
    pl.seed_everything(cfg.seed, verbose=False)
    dm, module, trainer = build(cfg)
    result = {"config": args.worker}

    if args.epoch_timing:
        synthetic(dm, cfg, n=60_000)
        timer = EpochTimer()
        trainer.callbacks.append(timer)
        trainer.fit(module, datamodule=dm)
        seconds = (timer.end - timer.start) * per_epoch / timer.steps
        result.update(
            epoch_s=seconds,
            images_per_s=2 * cfg.dataset.batch_size * per_epoch / seconds,
            timed_steps=timer.steps,
        )
    else:
        stop = TimeToAccuracy(args.threshold, args.budget_s)
        trainer.callbacks.append(stop)
        trainer.fit(module, datamodule=dm)
        result.update(
            seconds=stop.reached,
            best_acc=stop.best,
            steps=stop.steps,
            curve=stop.curve,
            elapsed=stop.elapsed,
        )
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available() and accel == "gpu":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def synthetic(dm, cfg, n: int) -> None:
    """Replace the datamodule's data by random uint8 images of MNIST / MNIST-M's size."""
    import torch

    from dann.data.registry import DomainData, PairData, Split

    g = torch.Generator().manual_seed(0)
    c, s, k = cfg.dataset.channels, cfg.dataset.image_size, cfg.dataset.num_classes

    def split(m):
        x = torch.randint(0, 256, (m, c, s, s), dtype=torch.uint8, generator=g)
        return Split(x, torch.randint(0, k, (m,), generator=g))

    dm.data = PairData(
        DomainData("synthetic-source", split(n), split(512), split(512)),
        DomainData("synthetic-target", split(n), split(512), split(512)),
        k,
    )
    dm.mean = torch.full((1, c, 1, 1), 0.5)


class TimeToAccuracy(pl.Callback):
    """Stops training when val/target_acc first reaches `threshold` or after `budget_s`."""

    def __init__(self, threshold: float, budget_s: float):
        self.threshold, self.budget_s = threshold, budget_s
        self.start, self.reached, self.best, self.steps, self.curve = None, None, 0.0, 0, []
        self.elapsed = 0.0

    def on_train_start(self, trainer, module):
        _sync(module)
        self.start = time.perf_counter()

    def on_validation_end(self, trainer, module):
        if trainer.sanity_checking or self.start is None:
            return
        _sync(module)
        self.elapsed = time.perf_counter() - self.start
        acc = float(trainer.callback_metrics.get("val/target_acc", float("nan")))
        self.best, self.steps = max(self.best, acc), trainer.global_step
        self.curve.append((round(self.elapsed, 1), trainer.global_step, round(acc, 4)))
        if acc >= self.threshold and self.reached is None:
            self.reached = self.elapsed
            trainer.should_stop = True
        elif self.elapsed > self.budget_s:
            trainer.should_stop = True


class EpochTimer(pl.Callback):
    """Wall time from the end of the first step to the end of the last one."""

    def __init__(self):
        self.start, self.end, self.steps = None, None, 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        _sync(module)
        now = time.perf_counter()
        if self.start is None:
            self.start = now
        else:
            self.end, self.steps = now, self.steps + 1


def _sync(module) -> None:
    import torch

    if module.device.type == "cuda":
        torch.cuda.synchronize()


def parent(args) -> None:
    from bench_common import machine, median, table

    names = args.configs.split(",")
    unknown = set(names) - set(CONFIGS)
    if unknown:
        raise SystemExit(f"unknown configs {sorted(unknown)}; choose from {sorted(CONFIGS)}")
    runs: dict[str, list[dict]] = {n: [] for n in names}
    script = Path(__file__).resolve()
    passthrough = [
        *("--device", args.device, "--threshold", str(args.threshold)),
        *("--max-epochs", str(args.max_epochs), "--val-every", str(args.val_every)),
        *("--budget-s", str(args.budget_s), "--threads", str(args.threads)),
        *("--epoch-fraction", str(args.epoch_fraction)),
        *(["--epoch-timing"] if args.epoch_timing else []),
        *args.overrides,
    ]
    for r in range(args.repeats):
        for name in names:  # alternate the configurations within each repeat
            cmd = [sys.executable, str(script), "--worker", name, *passthrough]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
            lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not lines:
                print(f"{name}: failed\n{proc.stderr[-3000:]}", flush=True)
                runs[name].append({"config": name, "failed": True})
                continue
            res = json.loads(lines[-1][len("RESULT ") :])
            runs[name].append(res)
            shown = {k: v for k, v in res.items() if k != "curve"}
            print(f"repeat {r + 1}/{args.repeats} {name}: {shown}", flush=True)
            if "curve" in res:
                print(f"  (seconds, step, val/target_acc): {res['curve']}", flush=True)

    threads = f"{args.threads} torch threads" if args.threads else "default torch threads"
    print(f"\n{machine()}; runs used {threads}")
    if args.epoch_timing:
        print(
            f"one epoch of 60,000 + 60,000 SYNTHETIC {args.device} images (random uint8 of "
            f"MNIST's shape; timed on {args.epoch_fraction:.0%} of the epoch), "
            f"{args.repeats} repeats\n"
        )
        base = median([x["epoch_s"] for x in runs[names[0]] if "epoch_s" in x] or [float("nan")])
        rows = []
        for n in names:
            ok = [x for x in runs[n] if "epoch_s" in x]
            if not ok:
                rows.append([n, "failed", "-", "-", "-", "-"])
                continue
            s = median([x["epoch_s"] for x in ok])
            rows.append(
                [
                    n,
                    s,
                    median([x["images_per_s"] for x in ok]),
                    base / s,
                    median([x["peak_rss_mb"] for x in ok]),
                    median([x.get("peak_gpu_mb", float("nan")) for x in ok]),
                ]
            )
        header = ["config", "s / epoch", "images/s", f"speed vs {names[0]}", "peak RSS MB"]
        print(table([*header, "peak GPU MB"], rows))
        return

    print(
        f"time until val/target_acc >= {args.threshold} (MNIST -> MNIST-M, {args.device}, "
        f"validated every {args.val_every} steps, budget {args.budget_s:.0f} s, "
        f"{args.repeats} repeats)\n"
    )

    def seconds(x):
        return x["seconds"] if x.get("seconds") is not None else float("inf")

    base = median([seconds(x) for x in runs[names[0]] if not x.get("failed")] or [float("inf")])
    rows = []
    for n in names:
        ok = [x for x in runs[n] if not x.get("failed")]
        if not ok:
            rows.append([n, "failed", "-", "-", "-", "-", "-"])
            continue
        reached = [x for x in ok if x.get("seconds") is not None]
        t = median([seconds(x) for x in ok])
        rate = median([x["steps"] / x["elapsed"] for x in ok if x["elapsed"]])
        rows.append(
            [
                n,
                f"{t:.1f}" if t != float("inf") else f"not in {args.budget_s:.0f} s",
                f"{len(reached)}/{len(ok)}",
                rate,
                median([x["best_acc"] for x in ok]),
                f"{t / base:.2f}x" if t != float("inf") and base != float("inf") else "-",
                median([x["peak_rss_mb"] for x in ok]),
            ]
        )
    header = ["config", "seconds to threshold", "reached", "steps/s", "best acc"]
    header.append(f"time vs {names[0]}")
    print(table([*header, "peak RSS MB"], rows))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--configs", default="fp32,fp32_malloc_default,bf16,bf16_cl", help=",".join(CONFIGS)
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threshold", type=float, default=0.4)
    parser.add_argument("--max-epochs", type=int, default=10, help="sets the schedules' p")
    parser.add_argument("--val-every", type=int, default=27, help="steps between validations")
    parser.add_argument("--budget-s", type=float, default=45.0, help="per run, then it stops")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--epoch-timing", action="store_true")
    parser.add_argument("--epoch-fraction", type=float, default=1.0)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="extra config overrides for every run")
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args)), flush=True)
    else:
        parent(args)


if __name__ == "__main__":
    main()
