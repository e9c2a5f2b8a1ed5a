"""`ProgressBar`: Lightning's tqdm progress bar, redrawn by time rather than by batch, and plain
lines when the output is not a terminal.

Lightning's bar redraws twice per batch (the count, then the metrics postfix, which it rebuilds
from the logged metrics each time): about half a millisecond of Python per step, much of a
small network's step on a GPU, for more redraws than a terminal can show. This one redraws at
most every `interval` seconds and at the end of each loop; the numbers shown are the same.

Under SLURM or `> log.txt` (stderr not a terminal; `plain=None` decides by that) a bar's
carriage-return updates pile up into one enormous line per epoch. There the bars are off and
each finished epoch gets one log line instead: its number, steps, wall time and the epoch's
train/ and val/ metrics (written when they are complete, at the next epoch's start or the end
of training). `dann.train` installs it unless the trainer's progress bar is disabled.
"""

import logging
import sys
import time

from pytorch_lightning.callbacks import TQDMProgressBar

log = logging.getLogger(__name__)


class ProgressBar(TQDMProgressBar):
    def __init__(
        self,
        interval: float = 0.2,
        process_position: int = 0,
        leave: bool = False,
        plain: bool | None = None,
    ):
        super().__init__(refresh_rate=1, process_position=process_position, leave=leave)
        self.interval = interval
        self.plain = plain  # None: when stderr is not a terminal
        self._last_draw = float("-inf")
        self._epoch: tuple[int, float, int] | None = None  # (epoch, start time, start step)

    def _should_update(self, current: int, total: int) -> bool:
        if not self.is_enabled:
            return False
        now = time.monotonic()
        if current == total or now - self._last_draw >= self.interval:
            self._last_draw = now
            return True
        return False

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self.plain is None:
            self.plain = not sys.stderr.isatty()
        if self.plain:
            self.disable()

    def on_train_epoch_start(self, trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        self._epoch_line(trainer)
        self._epoch = (trainer.current_epoch, time.monotonic(), trainer.global_step)

    def on_train_end(self, trainer, *args) -> None:
        super().on_train_end(trainer, *args)
        self._epoch_line(trainer)

    def _epoch_line(self, trainer) -> None:
        """One line for the epoch that ended (plain mode, rank 0), once its metrics are in."""
        if not self.plain or self._epoch is None or not trainer.is_global_zero:
            return
        epoch, start, step = self._epoch
        self._epoch = None
        metrics = {
            k: float(v)
            for k, v in sorted(trainer.callback_metrics.items())
            if k.startswith(("train/", "val/")) and v.numel() == 1
        }
        shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        log.info(
            "epoch %d/%d: %d steps, %.1f s | %s",
            epoch + 1,
            trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else -1,
            trainer.global_step - step,
            time.monotonic() - start,
            shown,
        )
