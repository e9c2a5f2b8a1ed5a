"""Checkpoint files: safe loading, checked state dicts, atomic writes.

- `load_checkpoint(path)`: `torch.load(weights_only=True)` (tensors and plain types only; no
  pickled code runs), with a `CheckpointError` that says what is wrong for a missing,
  truncated/corrupt or unsafe file.
- `check_state_dict` / `load_state_checked`: a checkpoint from another backbone, method or
  number of classes is an error listing the missing, unexpected and mis-shaped keys.
- `AtomicCheckpointIO`: Lightning's checkpoint writer, made atomic on local disks: write to a
  temporary file in the same folder, fsync, then `os.replace` - a run killed while saving leaves
  the previous `last.ckpt` intact, never a half-written one.
"""

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from dann.errors import CheckpointError

REQUIRED_KEYS = ("state_dict", "hyper_parameters")
SHOWN = 8  # keys listed per kind of mismatch


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
