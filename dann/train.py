"""`run(cfg)`: validate the config, seed, build datamodule/module/trainer, fit, test, summarise.

Before anything is loaded: the config is validated (`dann.config_check`), a `ckpt_path` is
read and checked against the model (and its saved settings against the config: one WARNING
lists what changed, `dann.checkpoints.resume_changes`), and a fresh run refuses a run directory
that already holds another run's checkpoints (resume it with `ckpt_path=last`, or pick another
directory).

Kept apart from `@hydra.main` (in the top-level train.py) so tests can call it with a config
composed by Hydra's compose API.
"""

import json
import logging
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only

from dann.callbacks import EMA, ModelSummary, ProgressBar
from dann.callbacks.selection import SelectionValidators, format_report
from dann.checkpoints import (
    RUN_CONFIG,
    RunConfig,
    check_state_dict,
    init_from_checkpoint,
    load_checkpoint,
    resume_changes,
)
from dann.config_check import ORACLE_METRIC, validate
from dann.data import DomainAdaptationDataModule
from dann.data.label_sets import LabelSets
from dann.errors import CheckpointError, ConfigError, DataError, users_error
from dann.extras import print_config, run_tags, save_tags
from dann.host import keep_freed_memory
from dann.known_warnings import filter_known_warnings
from dann.loggers import build_loggers, log_dir, log_metrics, log_summary
from dann.module import DALightningModule
from dann.precision import resolve as resolve_precision

log = logging.getLogger(__name__)

HPARAM_GROUPS = (
    "dataset",
    "backbone",
    "method",
    "norm",
    "loss",
    "schedule",
    "optimizer",
    "trainer",
)
NOT_HPARAMS = ("data_dir", "default_root_dir")  # where things are written, not what was run


def build(cfg: DictConfig) -> tuple[DomainAdaptationDataModule, DALightningModule, pl.Trainer]:
    filter_known_warnings()  # third-party messages that say nothing about the run
    if cfg.get("keep_host_memory", True):
        keep_freed_memory()  # process-wide, before the first training allocations (dann/host.py)
    method_cls = get_class(cfg.method._target_)
    datamodule = DomainAdaptationDataModule(
        **OmegaConf.to_container(cfg.dataset, resolve=True),
        train_on_target_labels=method_cls.trains_on_target_labels,
    )
    # dataset.input_size / num_classes left null (tables, sequences, text): read from the data
    with open_dict(cfg):
        cfg.dataset.update(datamodule.sizes_from_data())
    precision, channels_last = resolve_precision(
        cfg.trainer.precision, cfg.trainer.accelerator, cfg.backbone.get("channels_last")
    )
    backbone = OmegaConf.to_container(cfg.backbone, resolve=True)
    backbone["channels_last"] = channels_last
    label_sets = label_sets_of(cfg, method_cls)
    try:
        module = DALightningModule(
            backbone=backbone,
            method=OmegaConf.to_container(cfg.method, resolve=True),
            schedule=OmegaConf.to_container(cfg.schedule, resolve=True),
            optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
            num_classes=cfg.dataset.num_classes,
            norm=OmegaConf.to_container(cfg.norm, resolve=True),
            loss=OmegaConf.to_container(cfg.loss, resolve=True),
            label_sets=None
            if label_sets.setting == "closed"
            else {**label_sets.as_dict(), "unknown_threshold": cfg.get("unknown_threshold", 0.5)},
            class_mean_accuracy=bool(cfg.dataset.get("class_mean_accuracy", False)),
        )
    except Exception as e:
        both = _with_missing_data(datamodule, e)
        if both is e:
            raise
        raise both from e
    # an empty callback entry is off (callbacks/default.yaml: the opt-in analysis)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    if cfg.optimizer.get("ema_decay"):
        callbacks.append(EMA(decay=cfg.optimizer.ema_decay))
    bars = [c for c in callbacks if isinstance(c, pl.callbacks.ProgressBar)]
    if cfg.trainer.get("enable_progress_bar", True) and not bars:
        callbacks.append(ProgressBar())
    summaries = [c for c in callbacks if isinstance(c, pl.callbacks.ModelSummary)]
    if cfg.trainer.get("enable_model_summary", True) is not False and not summaries:
        callbacks.append(ModelSummary())  # without the FLOPs column Lightning cannot fill
    callbacks.append(RunConfig(OmegaConf.to_container(cfg, resolve=True)))  # resume checks it
    # no checkpoint callback configured (callbacks=none): no checkpoint, not Lightning's default
    checkpointing = any(isinstance(c, ModelCheckpoint) for c in callbacks)
    trainer = instantiate(
        cfg.trainer,
        precision=precision,
        logger=build_loggers(cfg.get("logger")),
        callbacks=callbacks,
        deterministic=resolve_deterministic(cfg),
        # the summary, if any, is in `callbacks` (else Lightning adds its own, or says it won't)
        enable_model_summary=False,
        enable_checkpointing=checkpointing and cfg.trainer.get("enable_checkpointing", True),
    )
    return datamodule, module, trainer


def _with_missing_data(datamodule: DomainAdaptationDataModule, error: Exception) -> Exception:
    """The model's files are missing (e.g. ImageNet weights): say in the same message whether
    the data's are too, so one attempt names every file to fetch, the data's first."""
    missing = users_error(error)
    if not isinstance(missing, DataError) or datamodule.hparams.download:
        return error
    try:
        datamodule.prepare_data()  # what fit would do next: read (or cache) the pair's files
    except DataError as data_error:
        return DataError(f"{data_error}; and {missing}")
    return error


def resolve_deterministic(cfg: DictConfig) -> bool:
    """trainer.deterministic, with null meaning: bit-reproducible on CPU, cuDNN's fastest
    kernels on a GPU."""
    deterministic = cfg.trainer.get("deterministic")
    if deterministic is None:
        return cfg.trainer.accelerator == "cpu" or not torch.cuda.is_available()
    return bool(deterministic)


def label_sets_of(cfg: DictConfig, method_cls: type) -> LabelSets:
    """The classes each domain holds (dataset.source_classes / target_classes), checked against
    the pair and the method before anything trains."""
    dataset = cfg.dataset
    sets = LabelSets.from_config(
        dataset.get("source_classes"), dataset.get("target_classes"), dataset.num_classes
    )
    if sets.setting not in method_cls.settings:
        fits = {
            "closed": "neither class list",
            "partial": "dataset.target_classes=[...] (a subset of the source's)",
            "open_set": "dataset.source_classes=[...] (the target keeps classes the source lacks)",
            "universal": "both lists (each domain with classes the other lacks)",
        }
        how = " or ".join(fits[s] for s in method_cls.settings)
        named = " / ".join(s.replace("_", "-") for s in method_cls.settings)
        raise ConfigError(
            f"{method_cls.__name__} is a method for {named} adaptation, "
            f"and this run is {sets.setting.replace('_', '-')} (source classes "
            f"{list(sets.source)}, target classes {list(sets.target)}): set {how}, or pick "
            "another method"
        )
    return sets


def start_from(cfg: DictConfig, module: DALightningModule, resumed: str | None) -> None:
    """init_from=<ckpt>: a new run starts from another run's weights. A resumed run
    (ckpt_path=) restores everything from its own checkpoint instead, so init_from= may only
    repeat the one that run started from (its overrides, given again)."""
    init_from = cfg.get("init_from")
    if not init_from:
        return
    if cfg.get("ckpt_path"):
        started = load_checkpoint(resumed).get(RUN_CONFIG, {}).get("init_from") if resumed else None
        if started != init_from:
            raise ConfigError(
                "init_from= starts a new run from another run's weights, ckpt_path= resumes a "
                f"run (or tests a checkpoint), and the run resumed did not start from {init_from}: "
                "give one of them"
            )
        return
    parts = init_from_checkpoint(module, init_from)
    log.info("init_from=%s: %s taken from it; a new schedule", init_from, ", ".join(parts))


def resolve_ckpt_path(cfg: DictConfig, module: DALightningModule) -> str | None:
    """The checkpoint to resume from, checked against the model; None for a fresh run.
    `last` is the newest of the run's last.ckpt (end of an epoch) and interrupted.ckpt."""
    ckpt_dir = Path(cfg.paths.output_dir) / "checkpoints"
    existing = sorted(ckpt_dir.glob("*.ckpt")) if ckpt_dir.is_dir() else []
    resumable = [p for p in existing if p.stem.startswith(("last", "interrupted"))]
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is None:
        if existing:
            raise ConfigError(
                f"{cfg.paths.output_dir} already holds a run ({existing[0].name}, ...): "
                "resume it with ckpt_path=last (its overrides: .hydra/overrides.yaml there), "
                "or start a new run in another directory (leave hydra.run.dir at its default)"
            )
        return None
    if ckpt_path == "last":
        if not resumable:
            raise ConfigError(
                f"ckpt_path=last: no checkpoint in {ckpt_dir}. Resume a run in its own "
                "directory: python train.py <the run's overrides> hydra.run.dir=<its run dir> "
                "ckpt_path=last (or pass ckpt_path=<path/to/file.ckpt>)"
            )
        newest = max(resumable, key=lambda p: p.stat().st_mtime)
    else:
        newest = Path(ckpt_path)
    ckpt = load_checkpoint(newest)
    check_state_dict(module, ckpt["state_dict"], str(newest))
    if "loops" not in ckpt:
        raise CheckpointError(f"{newest} holds weights only, no training state to resume")
    log.info("resuming from %s", newest)
    config = OmegaConf.to_container(cfg, resolve=True)
    changes = resume_changes(ckpt, config, module.hparams, str(newest))
    if changes:
        log.warning(
            "resuming %s with settings that differ from the run that wrote it; the new ones "
            "apply from here on: %s",
            newest,
            "; ".join(changes),
        )
    return str(newest)


def flat_hparams(cfg: DictConfig) -> dict:
    """The config groups that define a run, flattened for TensorBoard's HPARAMS tab (with the
    run's tags, comma-separated)."""
    out = {"seed": cfg.seed, "selection": cfg.selection.metric, "tags": ",".join(run_tags(cfg))}

    def walk(prefix: str, node) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}/{k}" if prefix else k, v)
        elif not prefix.endswith(NOT_HPARAMS):
            out[prefix] = node if isinstance(node, int | float | str | bool) else str(node)

    for group in HPARAM_GROUPS:
        walk(group, OmegaConf.to_container(cfg[group], resolve=True))
    return out


def _checkpoint_to_test(cfg: DictConfig, module: DALightningModule) -> tuple[str, dict]:
    """train=false: `ckpt_path`, checked against the model, and the validation metrics saved
    with it."""
    path = str(cfg.ckpt_path)
    ckpt = load_checkpoint(path)
    check_state_dict(module, ckpt["state_dict"], path)
    return path, ckpt.get("val_metrics", {})


def _selected_checkpoint(trainer: pl.Trainer, monitor: str) -> tuple[str | None, dict]:
    """The checkpoint `monitor` picked, and the validation metrics saved with it."""
    for ckpt in trainer.checkpoint_callbacks:
        if isinstance(ckpt, ModelCheckpoint) and ckpt.monitor == monitor and ckpt.best_model_path:
            saved = torch.load(ckpt.best_model_path, map_location="cpu", weights_only=True)
            return ckpt.best_model_path, saved.get("val_metrics", {})
    return None, {}


def run(cfg: DictConfig) -> dict[str, float | str | None]:
    """Train and test one configuration; returns the summary that is printed and logged."""
    validate(cfg)
    train, test_ = cfg.get("train", True), cfg.get("test", True)
    if not train and not cfg.get("ckpt_path"):
        raise ConfigError(
            "train=false: nothing trained, so test=true needs the checkpoint to test: "
            "ckpt_path=<run dir>/checkpoints/<file>.ckpt"
        )
    tags = run_tags(cfg)
    if rank_zero_only.rank == 0:  # once per run, not per DDP process
        if (cfg.get("extras") or {}).get("print_config"):
            print_config(cfg)
        if tags:
            save_tags(tags, cfg.paths.output_dir)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule, module, trainer = build(cfg)
    monitor = cfg.selection.metric
    if train:
        ckpt_path = resolve_ckpt_path(cfg, module)
        start_from(cfg, module, ckpt_path)
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        best_path, val_at_best = _selected_checkpoint(trainer, monitor)
    else:
        start_from(cfg, module, None)  # init_from= has nothing to start: refused
        best_path, val_at_best = _checkpoint_to_test(cfg, module)
        # nothing trained, nothing to save (nor the tested run's checkpoint records to restore)
        trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, ModelCheckpoint)]
    per_loader = []
    if test_:
        log.info("testing %s on the test sets", best_path or "the final weights")
        with warnings.catch_warnings():
            if not train:  # Lightning asks for the tested run's checkpoint callbacks: none here
                warnings.filterwarnings("ignore", "Be aware that when using `ckpt_path`")
            per_loader = trainer.test(
                module, datamodule=datamodule, ckpt_path=best_path, weights_only=True, verbose=False
            )
    test = {k: v for metrics in per_loader for k, v in metrics.items()}
    log_dirs = [d for d in map(log_dir, trainer.loggers) if d]  # before W&B closes its run
    summary = {
        f"selected_{monitor}": val_at_best.get(monitor),
        "selected_val/target_acc": val_at_best.get("val/target_acc"),
        "test/source_acc": test.get("test/source_acc"),
        "test/target_acc": test.get("test/target_acc"),
        # open-set / universal (dann/open_set.py): the setting's own metrics
        **{
            k: v for k, v in test.items() if k.startswith("test/target_") and k != "test/target_acc"
        },
        "checkpoint": best_path,
        "log_dir": log_dirs[0] if log_dirs else None,  # the first logger's
    }
    validators = [c for c in trainer.callbacks if isinstance(c, SelectionValidators)]
    report = validators[0].report() if validators else {}
    history = validators[0].history if validators else []
    if not trainer.is_global_zero:
        return summary
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = {
        **summary,
        "dataset": cfg.dataset.get("name"),
        "tags": tags,
        "selection": report,
        "history": history,
    }
    (out_dir / "summary.json").write_text(json.dumps(saved, indent=2))
    if trainer.loggers:
        picked = {f"selection/{k}_target_acc": r["target_acc"] for k, r in report.items()}
        log_metrics(trainer, picked)
        metrics = {
            f"hp/{k.replace('selected_', '')}": v
            for k, v in summary.items()
            if isinstance(v, float)
        }
        log_summary(trainer, flat_hparams(cfg), metrics)

    def fmt(v):
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    log.info(
        "SUMMARY best %s=%s%s | val/target_acc at that checkpoint=%s (oracle, reporting only) | "
        "test source_acc=%s target_acc=%s%s | checkpoint=%s | logs=%s",
        monitor,
        fmt(summary[f"selected_{monitor}"]),
        " (ORACLE selection: picked with target labels, not a domain-adaptation result)"
        if monitor == ORACLE_METRIC
        else "",
        fmt(summary["selected_val/target_acc"]),
        fmt(summary["test/source_acc"]),
        fmt(summary["test/target_acc"]),
        "".join(
            f" {label}={fmt(summary[key])}"
            for key, label in (
                ("test/target_h_score", "H-score"),
                ("test/target_class_mean_acc", "class-mean"),
            )
            if key in summary
        ),
        summary["checkpoint"],
        ", ".join(log_dirs) or None,
    )
    if report:
        log.info(
            "SELECTION what each validator picks (val target_acc = oracle):\n%s",
            format_report(report),
        )
    return summary
