"""Analysis while training: proxy A-distance, t-SNE figures, a TensorBoard custom scalar layout.

- `ProxyADistance`: `analysis/pad_inputs` once (raw inputs), `analysis/pad_features` at the
  start, every `every_n_epochs` and at the end of training.
- `FeatureTSNE`: `analysis/tsne` figures (by domain, by class) at the start and the end; with
  `projector=true` the features also go to TensorBoard's embedding projector.
- `ScalarLayout`: the CUSTOM SCALARS tab: label accuracies next to the domain classifier's
  accuracy (near 0.5 = invariant features), losses, schedules, the selection validators.

All work on rank 0 only and need a logger: under Lightning's `fast_dev_run` they skip. PAD goes
to every logger; figures to those that store them (dann/loggers.py); the projector and the
layout are TensorBoard's only. What a run's loggers cannot take is skipped with one info line.
PAD and t-SNE cost more than a short run's training: they are opt-in (`callbacks=analysis`),
and each measurement logs a line when it starts and when it is done, so the end of a run is
never a silent wait.
"""

import logging
import time

import matplotlib.pyplot as plt
import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only, rank_zero_warn

from dann.analysis import MIN_PAD_SAMPLES, extract, proxy_a_distance, tsne_figure
from dann.loggers import figure_loggers, log_figure, log_metrics, tensorboard

log = logging.getLogger(__name__)


class _AtStartEveryAndEnd(pl.Callback):
    """Calls `measure` at train start, every `every_n_epochs` epochs and at train end."""

    what = "analysis"  # named in the log lines

    def __init__(self, every_n_epochs: int | None, max_samples: int, seed: int):
        self.every_n_epochs = every_n_epochs
        self.max_samples = max_samples
        self.seed = seed
        self._last_step: int | None = None

    def measure(self, trainer, pl_module, at_start: bool) -> None:
        raise NotImplementedError

    def _maybe(self, trainer, pl_module, at_start: bool = False, when: str = "") -> None:
        if (
            trainer.logger is None
            or trainer.fast_dev_run
            or trainer.sanity_checking
            or self._last_step == trainer.global_step
        ):
            return
        self._last_step = trainer.global_step
        when = when or f"after epoch {trainer.current_epoch}"
        log.info("%s %s (up to %d samples per domain) ...", self.what, when, self.max_samples)
        start = time.perf_counter()
        self.measure(trainer, pl_module, at_start)
        log.info("%s %s: done in %.1f s", self.what, when, time.perf_counter() - start)

    @rank_zero_only
    def on_train_start(self, trainer, pl_module) -> None:
        self._maybe(trainer, pl_module, at_start=True, when="at the start of training")

    @rank_zero_only
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._maybe(trainer, pl_module)

    @rank_zero_only
    def on_train_end(self, trainer, pl_module) -> None:
        self._maybe(trainer, pl_module, when="at the end of training")


class ProxyADistance(_AtStartEveryAndEnd):
    what = "proxy A-distance"

    def __init__(self, every_n_epochs: int | None = 10, max_samples: int = 1000, seed: int = 0):
        super().__init__(every_n_epochs, max_samples, seed)

    def measure(self, trainer, pl_module, at_start: bool) -> None:
        data = extract(trainer, pl_module, self.max_samples)
        sizes = (len(data["source"]["features"]), len(data["target"]["features"]))
        if min(sizes) < MIN_PAD_SAMPLES:
            rank_zero_warn(
                f"proxy A-distance skipped: {sizes[0]} source / {sizes[1]} target validation "
                f"examples, at least {MIN_PAD_SAMPLES} per domain needed"
            )
            return
        kinds = ("inputs", "features") if at_start else ("features",)
        pad = {
            f"analysis/pad_{kind}": proxy_a_distance(
                data["source"][kind], data["target"][kind], self.seed
            )
            for kind in kinds
        }
        log_metrics(trainer, pad)


class FeatureTSNE(_AtStartEveryAndEnd):
    what = "t-SNE figure"

    def __init__(self, max_samples: int = 500, projector: bool = False, seed: int = 0):
        super().__init__(None, max_samples, seed)
        self.projector = projector

    def measure(self, trainer, pl_module, at_start: bool) -> None:
        loggers = figure_loggers(trainer, "analysis/tsne")
        if not loggers:
            return
        data = extract(trainer, pl_module, self.max_samples)
        s, t = data["source"], data["target"]
        title = f"{type(pl_module.method).__name__}, epoch {trainer.current_epoch}" + (
            " (start)" if at_start else ""
        )
        fig = tsne_figure(s["features"], s["labels"], t["features"], t["labels"], title, self.seed)
        log_figure(loggers, "analysis/tsne", fig, trainer.global_step)
        plt.close(fig)
        writer = tensorboard(trainer, "the embedding projector") if self.projector else None
        if writer is not None:
            import numpy as np

            features = np.concatenate([s["features"], t["features"]])
            meta = [f"source/{y}" for y in s["labels"]] + [f"target/{y}" for y in t["labels"]]
            writer.add_embedding(
                features, metadata=meta, tag="features", global_step=trainer.global_step
            )


LAYOUT = {
    "Invariance": {
        "label accuracy vs domain accuracy (0.5 = invariant)": [
            "Multiline",
            [
                "train/source_acc",
                "val/source_acc",
                "val/target_acc",
                "train/domain_acc",
                "val/domain_acc",
            ],
        ],
        "proxy A-distance": ["Multiline", ["analysis/pad_inputs", "analysis/pad_features"]],
    },
    "Training": {
        "losses": ["Multiline", ["train/loss", "train/label_loss", "train/domain_loss"]],
        "schedules": ["Multiline", ["train/lambda", "train/lr", "train/progress"]],
    },
    "Model selection (no target labels)": {
        "accuracies (val/target_acc = oracle)": [
            "Multiline",
            ["val/source_acc", "val/reverse_acc", "val/target_acc"],
        ],
        "DEV risk": ["Multiline", ["val/dev_risk"]],
        "entropy and SND": ["Multiline", ["val/entropy", "val/snd"]],
    },
}


class ScalarLayout(pl.Callback):
    @rank_zero_only
    def on_fit_start(self, trainer, pl_module) -> None:
        writer = tensorboard(trainer, "the CUSTOM SCALARS layout")
        if writer is not None:
            writer.add_custom_scalars(LAYOUT)
