"""Callbacks that make runs resumable and fail loudly.

- `RNGStates`: the torch (CPU and CUDA), NumPy and Python RNG states go into every checkpoint
  and are restored just before the first training batch after a resume - the moment they
  were saved at, as far as random numbers go - so dropout continues exactly as it would have.
- `InterruptCheckpoint`: on Ctrl-C or SIGTERM (what SLURM sends before it kills a job) saves
  `checkpoints/interrupted.ckpt`, which `ckpt_path=last` picks up when it is the newest. Any
  other exception (a bug, a NaN) saves nothing: the last good checkpoint stays the newest.
- `DivergenceGuard`: stops the run with a `DivergenceError` naming the step, λ, lr and the
  likely cause as soon as the training loss (the sum of every term) is NaN or infinite, or a
  weight is at a validation or epoch end. The per-step test stays on the device and is read
  back every `check_every_n_steps` steps and before each validation and checkpoint, so a GPU
  is not made to synchronise on every step.
"""

import logging
import random
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException

from dann.errors import DivergenceError

log = logging.getLogger(__name__)


def capture_rng_states() -> dict:
    """Every RNG state as tensors, ints and lists (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached": cached,
        },
        "python": {"version": version, "state": list(state), "gauss": gauss},
    }


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    n = states["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


class RNGStates(pl.Callback):
    def __init__(self):
        self._to_restore: dict | None = None

    def state_dict(self) -> dict:
        return capture_rng_states()

    def load_state_dict(self, state_dict: dict) -> None:
        self._to_restore = state_dict

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._to_restore is not None:
            restore_rng_states(self._to_restore)
            self._to_restore = None


class InterruptCheckpoint(pl.Callback):
    """Saves `<dirpath>/<filename>.ckpt` when training is interrupted (Ctrl-C, SIGTERM).

    Not Lightning's OnExceptionCheckpoint: that one also saves on crashes, and its presence
    makes every fresh `fit` look for a checkpoint to resume."""

    def __init__(self, dirpath: str, filename: str = "interrupted"):
        self.ckpt_path = str(Path(dirpath) / f"{filename}.ckpt")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, KeyboardInterrupt | SIGTERMException):
            return
        trainer.save_checkpoint(self.ckpt_path)
        if trainer.is_global_zero:
            log.warning(
                "INTERRUPTED at step %d: saved %s. Resume with the same command plus "
                "hydra.run.dir=%s ckpt_path=last",
                trainer.global_step,
                self.ckpt_path,
                trainer.default_root_dir,
            )


class DivergenceGuard(pl.Callback):
    def __init__(self, check_every_n_steps: int = 10):
        self.check_every_n_steps = check_every_n_steps
        self._first_bad: torch.Tensor | None = None  # first step with a bad loss, or -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        # the total loss: NaN or inf in any of its terms makes it non-finite too
        step = torch.full((1,), trainer.global_step - 1, device=loss.device)  # loss's step
        bad = ~torch.isfinite(loss.detach().reshape(1))
        if self._first_bad is None:
            self._first_bad = torch.full_like(step, -1)
        self._first_bad = torch.where(bad & (self._first_bad < 0), step, self._first_bad)
        if trainer.global_step % self.check_every_n_steps == 0:
            self.check(trainer, pl_module)

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.check(trainer, pl_module, weights=True)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.check(trainer, pl_module, weights=True)  # before the epoch's last.ckpt is written

    def check(self, trainer, pl_module, weights: bool = False) -> None:
        """Raise if a loss was non-finite; with `weights`, also if a parameter is (a last
        optimizer step can blow up the weights while the losses were still finite)."""
        if self._first_bad is None or bool((self._first_bad < 0).all()):
            if weights and not all(bool(p.isfinite().all()) for p in pl_module.parameters()):
                self._raise(trainer, pl_module, trainer.global_step, "a weight")
            return
        self._raise(trainer, pl_module, int(self._first_bad.item()), "the training loss")

    def _raise(self, trainer, pl_module, step: int, name: str) -> None:
        lr = trainer.optimizers[0].param_groups[-1]["lr"]
        lam = pl_module.lambda_schedule(pl_module.progress(step))
        last = [c.last_model_path for c in trainer.checkpoint_callbacks if c.last_model_path]
        last += [c.best_model_path for c in trainer.checkpoint_callbacks if c.best_model_path]
        kept = f" The last good checkpoint is {last[0]}." if last else " No checkpoint was written."
        raise DivergenceError(
            f"{name} became non-finite (NaN or inf) at step {step} (epoch "
            f"{trainer.current_epoch}; lambda={lam:.3g}, lr={lr:.3g}). The usual cause is a "
            "learning rate or lambda that is too high: lower optimizer.optim.lr or "
            "schedule.lambda_max, or set trainer.gradient_clip_val=1.0." + kept
        )
