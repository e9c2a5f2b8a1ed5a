"""Checkpoint files: safe loading, checked state dicts, atomic writes.

- `load_checkpoint(path)`: `torch.load(weights_only=True)` (tensors and plain types only; no
  pickled code runs), with a `CheckpointError` that says what is wrong for a missing,
  truncated/corrupt or unsafe file.
- `check_state_dict` / `load_state_checked`: a checkpoint from another backbone, method or
  number of classes is an error listing the missing, unexpected and mis-shaped keys.
- `AtomicCheckpointIO`: Lightning's checkpoint writer, made atomic on local disks: write to a
  temporary file in the same folder, fsync, then `os.replace` - a run killed while saving leaves
  the previous `last.ckpt` intact, never a half-written one.
- `RunConfig` / `resume_changes`: every checkpoint keeps the run's resolved config
  (`run_config`), so resuming with other settings lists what changed (`key: old -> new`), except
  the settings a resume may change (`RESUME_MAY_CHANGE`: where files are, the hardware, how long
  the run goes on, what is logged); another optimizer class is refused (`RESUME_MUST_KEEP`).
- `step_progress` / `carry_step_count`: the optimiser-step counts of Lightning's two loops in a
  checkpoint; a checkpoint written under Lightning's automatic loop resumes under the module's
  own optimiser step and the other way round, with its step count.
"""

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from dann.errors import CheckpointError, ConfigError

REQUIRED_KEYS = ("state_dict", "hyper_parameters")
SHOWN = 8  # keys listed per kind of mismatch
RUN_CONFIG = "run_config"
# settings (dotted prefixes) a resumed run may change without a warning: where outputs and data
# are, the hardware it runs on, how long it goes on (p = step / the new total: the schedules
# stretch from the resume point), what it evaluates, logs and checkpoints. Anything else (seed,
# schedule, optimizer, method, loss, norm, selection, batch size, precision, ...) changes what
# is trained, and a resume that changes it is warned about.
RESUME_MAY_CHANGE = (
    "ckpt_path",
    "paths",
    "keep_host_memory",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.max_time",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "trainer.limit_val_batches",
    "trainer.limit_test_batches",
    "dataset.root",
    "dataset.data_dir",
    "dataset.download",
    "dataset.mirrors",
    "dataset.num_workers",
    "dataset.pin_memory",
    "dataset.eval_batch_size",
    "logger",
    "callbacks",
    "backbone.init",  # how fresh weights are drawn: a resume restores them
    "tags",
    "extras",
    "train",
    "test",
)
# settings a resume cannot change: the checkpoint's optimizer state is that optimizer's
RESUME_MUST_KEEP = ("optimizer.optim._target_",)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint written by `dann`, read on the CPU with `weights_only=True`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint not found: {path}. Runs write them to "
            "outputs/runs/<run>/checkpoints/ (last.ckpt and the one the selection metric picked)"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain types, and is not loaded "
            f"(weights_only=True: unpickling could run arbitrary code). {str(e).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(
            f"cannot read checkpoint {path} ({path.stat().st_size} bytes): it is truncated or "
            f"not a PyTorch checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})"
        ) from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(
            f"{path} is not a dann checkpoint: it has no {', '.join(missing)} "
            "(write checkpoints with train.py or Trainer.save_checkpoint)"
        )
    return ckpt


def _listed(keys: list[str]) -> str:
    more = f", ... ({len(keys) - SHOWN} more)" if len(keys) > SHOWN else ""
    return ", ".join(keys[:SHOWN]) + more


def check_state_dict(module: torch.nn.Module, state_dict: dict, source: str) -> None:
    """Raise a CheckpointError unless `state_dict` has exactly `module`'s keys and shapes."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mis_shaped = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and hasattr(state_dict[k], "shape") and state_dict[k].shape != v.shape
    ]
    if not (missing or unexpected or mis_shaped):
        return
    problems = [
        f"missing: {_listed(missing)}" if missing else "",
        f"unexpected: {_listed(unexpected)}" if unexpected else "",
        f"shape (checkpoint vs model): {_listed(mis_shaped)}" if mis_shaped else "",
    ]
    raise CheckpointError(
        f"{source} does not fit this model - it was written by a run with another backbone, "
        "method or number of classes. Use the same backbone=/method=/dataset= as that run. "
        + "; ".join(p for p in problems if p)
    )


def load_state_checked(module: torch.nn.Module, state_dict: dict, source: str) -> None:
    check_state_dict(module, state_dict, source)
    module.load_state_dict(state_dict)


NETWORK_PARTS = ("feature_extractor", "classifier", "method")


def init_from_checkpoint(module: torch.nn.Module, path: str | os.PathLike) -> list[str]:
    """`init_from=<ckpt>`: start from another run's weights, nothing else (no optimiser state,
    schedule position or step count: the run trains as a new one). The feature extractor and
    label classifier must fit exactly; the method's heads (discriminators) are taken where the
    checkpoint has them with the same shapes, else left as initialised. Returns the parts taken."""
    state = load_checkpoint(path)["state_dict"]
    own = {k: v for k, v in module.state_dict().items() if k.startswith(NETWORK_PARTS)}
    fits = {k for k, v in own.items() if k in state and state[k].shape == v.shape}
    misfit = sorted(k for k in own if not k.startswith("method.") and k not in fits)
    if misfit:
        raise CheckpointError(
            f"init_from={path}: its feature extractor and label classifier do not fit this "
            f"model ({_listed(misfit)}); use the backbone= and dataset= of the run that wrote it"
        )
    method = [k for k in own if k.startswith("method.")]
    method_fits = bool(method) and all(k in fits for k in method)
    taken = {k: state[k] for k in fits if method_fits or not k.startswith("method.")}
    module.load_state_dict(taken, strict=False)
    return [p for p in NETWORK_PARTS if any(k.startswith(p + ".") for k in taken)]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file next to it, fsyncs, then renames it over
    the target (`os.replace` is atomic on POSIX and Windows)."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class RunConfig(pl.Callback):
    """Writes the run's resolved config (plain types) into every checkpoint as `run_config`."""

    def __init__(self, config: dict):
        self.config = config

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[RUN_CONFIG] = self.config


def _flat(tree, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict) and tree:
        return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): tree}


def changed_settings(ckpt: dict, config: dict, hparams: dict) -> list[str]:
    """`key: old -> new` for each setting of the resuming run's resolved `config` that differs
    from the run that wrote `ckpt`, except those in RESUME_MAY_CHANGE. A checkpoint without a
    `run_config` (written before runs kept it) is compared on the model's hyper-parameters
    (`hparams`, e.g. schedule, optimizer, method) only."""
    if RUN_CONFIG in ckpt:
        old, new = _flat(ckpt[RUN_CONFIG]), _flat(config)
    else:
        old, new = _flat(ckpt.get("hyper_parameters", {})), _flat(hparams)
    unset = "(unset)"
    return [
        f"{key}: {old.get(key, unset)} -> {new.get(key, unset)}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key, unset) != new.get(key, unset)
        and not any(key == p or key.startswith(f"{p}.") for p in RESUME_MAY_CHANGE)
    ]


def resume_changes(ckpt: dict, config: dict, hparams: dict, source: str) -> list[str]:
    """`changed_settings`, after refusing those in RESUME_MUST_KEEP with a ConfigError."""
    changes = changed_settings(ckpt, config, hparams)
    refused = [c for c in changes if c.startswith(RESUME_MUST_KEEP)]
    if refused:
        raise ConfigError(
            f"cannot resume {source} with {'; '.join(refused)}: its optimizer state belongs to "
            "the optimizer it was written with. Resume with that run's optimizer=..., or start "
            "a new run (without ckpt_path)"
        )
    return changes


def step_progress(fit_loop: dict) -> dict[str, dict]:
    """The optimiser-step progress Lightning keeps in a checkpoint's fit loop state for each of
    its loops: {"automatic": ..., "manual": ...}, each with `total` and `current` counts (`ready`,
    `completed`); {} if the checkpoint has no such state."""
    try:
        automatic = fit_loop["epoch_loop.automatic_optimization.optim_progress"]
        manual = fit_loop["epoch_loop.manual_optimization.optim_step_progress"]
    except (KeyError, TypeError):
        return {}
    return {"automatic": automatic["optimizer"]["step"], "manual": manual}


def carry_step_count(fit_loop: dict | None, automatic: bool) -> None:
    """Lightning counts optimiser steps (global_step) in the progress of the loop that ran
    them, automatic or manual. A checkpoint written under the other mode (another gradient
    clipping or accumulation setting, or a dann before `DALightningModule._optimize`) has its
    count in the other one: copied here to the one that counts now, so global_step, p, the
    schedules and max_steps continue where the checkpoint stopped."""
    progress = step_progress(fit_loop)
    if not progress:
        return
    now, other = ("automatic", "manual") if automatic else ("manual", "automatic")
    dest, source = progress[now], progress[other]
    # total.completed is what global_step reads (Lightning's own checkpoint migration sets
    # only it); `current` means this epoch in one loop and the whole run in the other: left
    if dest["total"]["completed"] < source["total"]["completed"]:
        completed = source["total"]["completed"]
        dest["total"].update(ready=completed, completed=completed)
