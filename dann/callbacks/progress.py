"""`ProgressBar`: Lightning's tqdm progress bar, redrawn by time rather than by batch.

Lightning's bar redraws twice per batch (the count, then the metrics postfix, which it rebuilds
from the logged metrics each time): about half a millisecond of Python per step, much of a
small network's step on a GPU, for more redraws than a terminal can show. This one redraws at
most every `interval` seconds and at the end of each loop; the numbers shown are the same.
`dann.train` installs it unless the trainer's progress bar is disabled.
"""

import time

from pytorch_lightning.callbacks import TQDMProgressBar


class ProgressBar(TQDMProgressBar):
    def __init__(self, interval: float = 0.2, process_position: int = 0, leave: bool = False):
        super().__init__(refresh_rate=1, process_position=process_position, leave=leave)
        self.interval = interval
        self._last_draw = float("-inf")

    def _should_update(self, current: int, total: int) -> bool:
        if not self.is_enabled:
            return False
        now = time.monotonic()
        if current == total or now - self._last_draw >= self.interval:
            self._last_draw = now
            return True
        return False
