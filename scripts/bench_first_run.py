"""A newcomer's first run: `python train.py trainer.max_epochs=1` as a user types it (a fresh
Python process: imports, data, one epoch, validation, test, summary), with the default callbacks
against only the checkpoint callbacks, side by side.

    python scripts/bench_first_run.py                        # 3 repeats of each (~2 min on a CPU)
    python scripts/bench_first_run.py --repeats 5 --variants default,checkpoints,analysis
    python scripts/bench_first_run.py --threads 1 trainer.limit_train_batches=5

Variants (each a `python train.py ...` subprocess, wall time from start to exit):
- default: `callbacks=default` (checkpoints, RNG states, divergence guard, selection validators,
  the TensorBoard layout);
- checkpoints: the default config with every callback removed (`~callbacks.<name>`) except the
  checkpoint ones (ModelCheckpoint best + last, the interrupt checkpoint);
- analysis: `callbacks=analysis` (default + proxy A-distance + t-SNE), the opt-in analysis.

The variants alternate within each repeat (default, checkpoints, ..., default, ...), so a
shared machine's drift touches them alike; the ratio is the median over repeats of each
repeat's default / checkpoints time (target: at most 1.5x). The data caches are built by an
untimed run first. Timings are printed, never asserted.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import ROOT, machine, make_cfg, median, table

CHECKPOINT_TARGETS = (
    "pytorch_lightning.callbacks.ModelCheckpoint",
    "lightning.pytorch.callbacks.ModelCheckpoint",
    "dann.callbacks.InterruptCheckpoint",
)


def checkpoint_only_overrides(tmp: str) -> list[str]:
    """`~callbacks.<name>` for every default callback that is not a checkpoint one (an empty
    entry is off already)."""
    callbacks = make_cfg([], tmp).callbacks
    return [
        f"~callbacks.{name}"
        for name, node in callbacks.items()
        if node and node.get("_target_") not in CHECKPOINT_TARGETS
    ]


def train_py(args: list[str], run_dir: Path, env: dict) -> float:
    """Wall seconds of `python train.py <args>` in a subprocess; fails loudly on an error."""
    cmd = [sys.executable, str(ROOT / "train.py"), *args, f"hydra.run.dir={run_dir}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each variant")
    parser.add_argument(
        "--variants",
        default="default,checkpoints",
        help="comma-separated: default,checkpoints,analysis",
    )
    parser.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS (0: as is)")
    parser.add_argument("overrides", nargs="*", help="extra overrides for every run")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    base = ["trainer.max_epochs=1", *args.overrides]
    with tempfile.TemporaryDirectory() as tmp:
        variants = {
            "default": base,
            "checkpoints": [*base, *checkpoint_only_overrides(tmp)],
            "analysis": [*base, "callbacks=analysis"],
        }
        names = [v.strip() for v in args.variants.split(",") if v.strip()]
        unknown = set(names) - set(variants)
        if unknown or not names:
            sys.exit(f"--variants: choose from {', '.join(variants)} (got {args.variants!r})")
        train_py(["debug=fdr"], Path(tmp) / "warmup", env)  # data caches, untimed
        times: dict[str, list[float]] = {n: [] for n in names}
        for r in range(args.repeats):
            for n in names:
                times[n].append(train_py(variants[n], Path(tmp) / f"{n}_{r}", env))
            print(
                f"repeat {r + 1}/{args.repeats}: "
                + ", ".join(f"{n} {v[-1]:.1f} s" for n, v in times.items()),
                flush=True,
            )

    print(f"\n{machine()}; OMP_NUM_THREADS={env.get('OMP_NUM_THREADS', 'unset')}")
    print(f"python train.py {' '.join(base)}, {args.repeats} repeats, alternating\n")
    rows = []
    for n in names:
        ratio = (
            median([t / c for t, c in zip(times[n], times["checkpoints"], strict=True)])
            if "checkpoints" in times
            else float("nan")
        )
        rows.append([n, median(times[n]), min(times[n]), max(times[n]), ratio])
    print(table(["callbacks", "wall s (median)", "min", "max", "/ checkpoints only"], rows))
    if "default" in times and "checkpoints" in times:
        ratio = rows[names.index("default")][4]
        verdict = "ok" if ratio <= 1.5 else "over the target"
        print(f"\ndefault / checkpoints only = {ratio:.2f}x (target <= 1.5x: {verdict})")
        print("checkpoint-only overrides: " + " ".join(variants["checkpoints"][len(base) :]))


if __name__ == "__main__":
    main()
