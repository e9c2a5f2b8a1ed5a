"""Figures logged to every logger that stores them (matplotlib, headless; dann/loggers.py)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

from dann.loggers import figure_loggers, log_figure  # noqa: E402


class DecisionBoundaryFigure(pl.Callback):
    """For 2-D inputs: the label classifier's decision regions with source (dots, coloured by
    class) and target (crosses) test points, as `figures/decision_boundary` (TensorBoard,
    MLflow, W&B) — the paper's Fig. 2 for the two moons. Drawn every `every_n_epochs` and at
    the end."""

    def __init__(self, every_n_epochs: int = 100, resolution: int = 200):
        self.every_n_epochs = every_n_epochs
        self.resolution = resolution

    def figure(self, module: pl.LightningModule, source, target) -> plt.Figure:
        pts = torch.cat([source.inputs, target.inputs])
        lo, hi = pts.min(0).values - 0.5, pts.max(0).values + 0.5
        axes = [torch.linspace(lo[i], hi[i], self.resolution) for i in range(2)]
        gx, gy = torch.meshgrid(*axes, indexing="xy")
        grid = torch.stack([gx.flatten(), gy.flatten()], 1).to(module.device)
        with torch.no_grad():
            pred = module(grid).argmax(1).view(gx.shape).cpu()
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.contourf(gx, gy, pred, alpha=0.25, cmap="coolwarm")
        ax.scatter(*source.inputs.T, c=source.labels, cmap="coolwarm", s=6, label="source")
        ax.scatter(
            *target.inputs.T,
            c=target.labels,
            cmap="coolwarm",
            s=10,
            marker="x",
            alpha=0.5,
            label="target",
        )
        ax.legend(loc="upper right")
        ax.set_title(f"{type(module.method).__name__}, epoch {module.current_epoch}")
        fig.tight_layout()
        return fig

    def _log(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        data = trainer.datamodule.data
        source, target = data.source.test, data.target.test
        if source.inputs.ndim != 2 or source.inputs.shape[1] != 2 or trainer.logger is None:
            return
        loggers = figure_loggers(trainer, "figures/decision_boundary")
        if not loggers:
            return
        was_training = module.training
        module.eval()
        fig = self.figure(module, source, target)
        module.train(was_training)
        log_figure(loggers, "figures/decision_boundary", fig, trainer.global_step)
        plt.close(fig)

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._log(trainer, module)

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._log(trainer, module)
