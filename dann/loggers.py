"""The `logger` config group at run time: build one logger or several (`logger=many`), hand every
logger the run's hyper-parameters and final metrics, say where each one writes, and send figures
to the loggers that store them (TensorBoard, MLflow, W&B; CSV stores none).

A logger config is one `_target_` (configs/logger/tensorboard.yaml) or a dict of them
(configs/logger/many.yaml); `~logger` runs without one.

A resumed run (`ckpt_path=last`, same run dir) continues every logger's records: TensorBoard
adds an event file beside the earlier ones, and `CSVLogger` (logger=csv) appends to the run's
metrics.csv, where Lightning's would delete it.
"""

import csv
import logging
import os
from importlib.util import find_spec
from pathlib import Path
from weakref import WeakKeyDictionary

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from pytorch_lightning.loggers.csv_logs import CSVLogger as LightningCSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import DummyLogger, rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

from dann.errors import ConfigError

log = logging.getLogger(__name__)

FIGURE_LOGGERS = (TensorBoardLogger, MLFlowLogger, WandbLogger)
PACKAGES = {"MLFlowLogger": "mlflow", "WandbLogger": "wandb"}  # logger -> package (and extra)
_told: WeakKeyDictionary = WeakKeyDictionary()  # trainer -> what was skipped, already said


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, continuing an existing metrics.csv (its rows and columns)."""

    def _check_log_dir_exists(self) -> None:  # Lightning's deletes metrics.csv here
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = next(csv.reader(f), [])


class CSVLogger(LightningCSVLogger):
    """Lightning's CSVLogger (<save_dir>/<name>/metrics.csv, hparams.yaml), except that a run
    writing where one already did (a resumed run) appends to its metrics.csv."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def build_loggers(cfg: DictConfig | None) -> Logger | list[Logger] | bool:
    """The Trainer's `logger=` argument: one logger, a list of them, or False for none."""
    if not cfg:
        return False
    if "_target_" in cfg:
        return _instantiate(cfg)
    loggers = [_instantiate(c) for c in cfg.values() if c]
    return loggers or False


def _instantiate(cfg: DictConfig) -> Logger:
    if cfg._target_.endswith("MLFlowLogger"):
        # MLflow 3 refuses its local file store (configs/logger/mlflow.yaml's default) unless
        # asked; it only matters for file stores, and a value the user set wins
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    for package, extra in PACKAGES.items():
        if cfg._target_.endswith(f".{package}") and find_spec(extra) is None:
            raise ConfigError(
                f"{cfg._target_} needs the `{extra}` package: pip install -e '.[{extra}]' "
                "(or pick another logger: logger=tensorboard, csv or many)"
            )
    return instantiate(cfg)


def log_dir(logger: Logger) -> str | None:
    """The folder this run's records are in: TensorBoard's/CSV's log dir, the MLflow run's
    folder in a local store, W&B's run folder; None for a remote store, fast_dev_run, and on
    ranks other than 0."""
    if isinstance(logger, DummyLogger):  # fast_dev_run replaces the loggers with it
        return None
    if isinstance(logger, MLFlowLogger | WandbLogger) and rank_zero_only.rank != 0:
        return None  # their run exists on rank 0 only
    if isinstance(logger, MLFlowLogger):
        if logger.save_dir is None:  # a tracking server
            return None
        run = Path(logger.save_dir, logger.experiment_id, logger.run_id).resolve()
        return str(run if run.is_dir() else run.parents[1])
    if isinstance(logger, WandbLogger):
        return str(Path(logger.experiment.dir).parent)  # <save_dir>/wandb/<offline-run-...>
    return getattr(logger, "log_dir", None) or logger.save_dir


def log_summary(trainer: pl.Trainer, hparams: dict, metrics: dict) -> None:
    """Hyper-parameters and final metrics to every logger, then close each one: TensorBoard
    pairs them in its HPARAMS tab, the others record them as params/config and metrics; an
    MLflow run is tagged `output_dir` (the Hydra run dir: checkpoints, summary.json)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(hparams, metrics=metrics)
        else:
            logger.log_hyperparams(_new_params(logger, hparams))
            logger.log_metrics(metrics, step=trainer.global_step)
        if isinstance(logger, MLFlowLogger):  # where the checkpoints and summary.json are
            logger.experiment.set_tag(logger.run_id, "output_dir", trainer.default_root_dir)
        logger.finalize("success")
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()  # flush and close the run (finalize leaves it open)


def _new_params(logger: Logger, hparams: dict) -> dict:
    """MLflow params are write-once: keys Lightning already logged from the module's hparams at
    the start (such as the resolved backbone/channels_last) keep that value."""
    if not isinstance(logger, MLFlowLogger):
        return hparams
    logged = logger.experiment.get_run(logger.run_id).data.params
    return {k: v for k, v in hparams.items() if k not in logged}


def log_metrics(trainer: pl.Trainer, metrics: dict) -> None:
    """Scalars logged outside Lightning's `self.log`, to every logger."""
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=trainer.global_step)


def tensorboard(trainer: pl.Trainer, what: str):
    """The SummaryWriter of the run's TensorBoard logger, or None (after one info line saying
    that `what` is skipped)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    _tell_once(trainer, what, "needs TensorBoard (logger=tensorboard or logger=many)")
    return None


def figure_loggers(trainer: pl.Trainer, what: str) -> list[Logger]:
    """The run's loggers that store figures; when there is none, one info line saying that
    `what` is skipped."""
    found = [lg for lg in trainer.loggers if isinstance(lg, FIGURE_LOGGERS)]
    if not found:
        _tell_once(trainer, what, "needs a logger that stores figures (tensorboard, mlflow, wandb)")
    return found


def log_figure(loggers: list[Logger], tag: str, figure, step: int) -> None:
    """A matplotlib figure to each of `loggers` (from `figure_loggers`); MLflow keeps it as the
    artifact `<tag>/step_<step>.png`. The caller closes the figure."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(tag, figure, step, close=False)
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_figure(logger.run_id, figure, f"{tag}/step_{step:06d}.png")
        elif isinstance(logger, WandbLogger):
            logger.log_image(tag, [figure], step=step)


def _tell_once(trainer: pl.Trainer, what: str, why: str) -> None:
    if not trainer.loggers or trainer.fast_dev_run or not trainer.is_global_zero:
        return  # no logger wanted, or fast_dev_run's no-op one: nothing to say
    told = _told.setdefault(trainer, set())
    if what in told:
        return
    told.add(what)
    names = ", ".join(type(lg).__name__ for lg in trainer.loggers)
    log.info("%s skipped: it %s; this run logs to %s", what, why, names)
