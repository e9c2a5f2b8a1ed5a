"""`EMA`: evaluate and checkpoint an exponential moving average of the weights.

Lightning's `WeightAveraging` does the averaging (torch's AveragedModel, buffers included), the
swap for validation and the checkpoint layout (`state_dict` = the average,
`current_model_state` = the raw weights). Two choices here:
- the decay warms up, min(decay, (1 + n) / (10 + n)) after n updates (as timm's and tllib's
  model EMAs do), so the average does not drag the random initial weights through a short run;
- when a checkpoint is loaded outside fit (trainer.test after fit, with the best checkpoint),
  Lightning would load the raw weights over the average, because the callback still holds its
  averaged model from fit; here the averaged weights the checkpoint was selected on stay.
Set with `optimizer.ema_decay` (dann.train adds the callback).
"""

from functools import partial

import torch
from pytorch_lightning.callbacks import WeightAveraging
from pytorch_lightning.trainer.states import TrainerFn


def ema_update(
    averages: list[torch.Tensor],
    currents: list[torch.Tensor],
    num_averaged: torch.Tensor,
    decay: float,
) -> None:
    """One EMA step, in place, with the warmed-up decay min(decay, (1 + n) / (10 + n)), for a
    group of tensors of one device and dtype (integer buffers, e.g. BatchNorm's batch count,
    are copied)."""
    if not averages[0].is_floating_point():
        torch._foreach_copy_(averages, currents)
        return
    n = float(num_averaged)
    torch._foreach_lerp_(averages, currents, 1.0 - min(decay, (1.0 + n) / (10.0 + n)))


class EMA(WeightAveraging):
    def __init__(self, decay: float = 0.99):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"optimizer.ema_decay={decay} must lie in (0, 1)")
        super().__init__(use_buffers=True, multi_avg_fn=partial(ema_update, decay=decay))
        self.decay = decay

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None  # after every optimizer step

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if trainer.state.fn == TrainerFn.FITTING:  # a resumed fit: raw weights and the average
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
