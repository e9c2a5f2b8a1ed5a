"""Per-step scalars of the training step, written to the loggers at the steps Lightning writes
its own (`log_step_scalars`), the learning rates they report (`learning_rates`), and the training
accuracies' inputs, handed to torchmetrics in batches of steps (`BatchedAccuracies`).

self.log costs about half a millisecond of Python per value (Lightning moves its result state
each call), several times a small network's GPU step; so between the last batches of epochs the
module hands its scalars straight to the loggers, as Lightning's writer does: the same step and
`epoch`, one device sync for all of them, public API only. tests/test_performance.py and
test_lean_step.py check the steps written against Lightning's rule.
"""

import pytorch_lightning as pl
import torch


def log_step_scalars(
    module: pl.LightningModule, logs: dict[str, torch.Tensor | float], batch_size: int, batch_idx
) -> None:
    """At the last batch of an epoch (and under fast_dev_run) through self.log, so
    callback_metrics end every epoch with its last step's values (written by Lightning if that
    step is a logging step); at Lightning's other logging steps, straight to the loggers."""
    trainer = module.trainer
    if trainer.is_last_batch or trainer.fast_dev_run:
        # floats as CPU tensors: Lightning would copy each Python float to the GPU (a sync)
        logs = {
            k: v if isinstance(v, torch.Tensor) else torch.tensor(v, dtype=torch.float32)
            for k, v in logs.items()
        }
        module.log_dict(logs, on_step=True, on_epoch=False, batch_size=batch_size)
    elif trainer.loggers and writes_step_metrics(trainer, batch_idx):
        # what Lightning's own write does: every logger, at step global_step - 1 (the
        # optimiser steps before this batch's), with the epoch, then saved
        values = {**to_floats(logs), "epoch": trainer.current_epoch}
        for logger in trainer.loggers:
            logger.log_metrics(values, step=trainer.global_step - 1)
            logger.save()


def learning_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """`train/lr`: the schedule's base rate (the last parameter group: heads and other new
    layers, at optimizer.optim.lr times the annealing); where the backbone's group trains at
    another rate (backbone.lr_mult != 1), that one as `train/lr_backbone`."""
    groups = optimizer.param_groups
    rates = {"train/lr": groups[-1]["lr"]}
    if len(groups) > 1 and groups[0]["lr"] != groups[-1]["lr"]:
        rates["train/lr_backbone"] = groups[0]["lr"]
    return rates


def writes_step_metrics(trainer: pl.Trainer, batch_idx: int) -> bool:
    """Whether Lightning writes its step metrics after batch `batch_idx` (not the last of its
    epoch): after every trainer.log_every_n_steps-th optimiser step, and when the run is
    stopping; never after a batch that only accumulates gradients (Lightning steps the
    optimiser after every accumulate_grad_batches-th batch of an epoch, and after its last).
    Read from the trainer's public state; tests/test_performance.py and test_lean_step.py
    check the steps written against Lightning's rule."""
    every = trainer.log_every_n_steps
    if not every or (batch_idx + 1) % trainer.accumulate_grad_batches:
        return False
    return trainer.global_step % every == 0 or trainer.should_stop


def to_floats(values: dict[str, torch.Tensor | float]) -> dict[str, float]:
    """Scalars (0-d tensors, on any device, and floats) as Python floats, with one device sync."""
    tensors = {k: v for k, v in values.items() if isinstance(v, torch.Tensor)}
    floats = {k: float(v) for k, v in values.items() if not isinstance(v, torch.Tensor)}
    if tensors:
        stacked = torch.stack([t.detach().float().reshape(()) for t in tensors.values()])
        floats.update(zip(tensors, stacked.tolist(), strict=True))
    return {k: floats[k] for k in values}


ACCURACY_BATCHES = 32  # training steps whose predictions reach the training accuracies at once


class BatchedAccuracies:
    """Keeps each training step's predicted classes (and "is target" calls) and feeds them to
    the accuracies once per `every` steps instead of twice per step: each update costs a tenth
    of a millisecond of Python, on every step of a step that may take a few milliseconds. The
    module flushes at the end of each epoch and before its state is saved, so the metrics never
    miss a batch (a run resumed mid-epoch logs the same accuracies)."""

    def __init__(self, source_acc, domain_acc, every: int = ACCURACY_BATCHES):
        self.source_acc, self.domain_acc, self.every = source_acc, domain_acc, every
        self.pending: list[tuple] = []

    def add(self, classes, labels, is_target, domains) -> None:
        """One step's predictions; `is_target` None when the method has no discriminator."""
        self.pending.append((classes, labels, is_target, domains))
        if len(self.pending) >= self.every:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        classes, labels, is_target, domains = zip(*self.pending, strict=True)
        self.pending.clear()
        self.source_acc.update(torch.cat(classes), torch.cat(labels))
        if is_target[0] is not None:
            self.domain_acc.update(torch.cat(is_target), torch.cat(domains))
