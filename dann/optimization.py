"""`ModuleOptimizer`: how `DALightningModule` builds and steps its optimiser (a mixin of it).

- `configure_optimizers`: the `optimizer` config's optimiser over two parameter groups
  (pretrained layers at lr * backbone.lr_mult), never the frozen parameters (DIRT-T's teacher),
  and the paper's annealing as a per-step LambdaLR of p.
- `automatic_optimization` / `_optimize`: the module steps the optimiser itself unless gradient
  clipping or accumulation needs Lightning's automatic loop.
- `_sam_ascent`: SDAT's first half (`optimizer.sam_rho`, dann/sam.py).

It reads the module's `hparams`, `feature_extractor`, `classifier`, `method`, `sam_rho`,
`_total()`, `_forward_training_batch` and `_label_loss`.
"""

import torch
from hydra.utils import instantiate
from pytorch_lightning.callbacks import GradientAccumulationScheduler
from torch.optim.lr_scheduler import LambdaLR

from dann import sam
from dann.errors import ConfigError
from dann.schedules import lr_annealing


class ModuleOptimizer:
    def configure_optimizers(self):
        cfg = self.hparams.optimizer
        # pretrained layers fine-tune at lr * backbone.lr_mult (0.1 in the paper's Office runs);
        # a feature extractor may name them with `pretrained_parameters()`, else it is all of it
        fe = self.feature_extractor
        slow = list(getattr(fe, "pretrained_parameters", fe.parameters)())
        slow_ids = {id(p) for p in slow}
        groups = [
            {"params": slow, "lr": cfg["optim"]["lr"] * self.hparams.backbone.get("lr_mult", 1.0)},
            # not the frozen ones (DIRT-T's teacher)
            {"params": [p for p in self.parameters() if id(p) not in slow_ids and p.requires_grad]},
        ]
        opt = instantiate(cfg["optim"])(groups)
        anneal = cfg.get("lr_annealing")
        if not anneal:
            return opt

        def factor(step: int) -> float:
            # p = 0 needs no step count: asking for it here, before fit has set up its data,
            # would build the train loader early and lose a resumed run's loader position
            return lr_annealing(min(step / self._total(), 1.0) if step else 0.0, **anneal)

        schedule = LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    @property
    def automatic_optimization(self) -> bool:
        """Whether Lightning's automatic optimisation runs the step: only where gradient
        clipping or accumulation is asked for (`trainer.gradient_clip_val`,
        `trainer.accumulate_grad_batches`, Lightning's `GradientAccumulationScheduler`), which
        only it implements. Otherwise training_step steps the optimiser itself (`_optimize`),
        skipping the closure loop around it (about a dozen hook calls, a third of a millisecond
        of Python per step)."""
        try:
            trainer = self.trainer
        except RuntimeError:  # not attached to a Trainer (yet)
            return True
        return (
            bool(trainer.gradient_clip_val)
            or trainer.accumulate_grad_batches != 1
            or any(isinstance(c, GradientAccumulationScheduler) for c in trainer.callbacks)
        )

    def _optimize(self, loss: torch.Tensor, sam_saved: list | None = None) -> None:
        """One optimiser step, in the order Lightning's automatic loop runs it (zero_grad,
        backward, step, then the per-step lr schedule), through Lightning's own wrappers, so the
        precision plugin (16-mixed's gradient scaling), DDP and global_step behave as under
        automatic optimisation; results are bit-identical on CPU in fp32 and bf16 (tested; 16-mixed
        and DDP on GPUs not run here). Of the hooks, on_before_backward, on_after_backward and
        on_before_optimizer_step still run; on_before_zero_grad, optimizer_zero_grad,
        optimizer_step and lr_scheduler_step are not called (dann overrides none of them)."""
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(loss)
        if sam_saved:
            sam.restore(sam_saved)  # SAM: the gradients of w + e, applied to w
        optimizer.step()
        schedule = self.lr_schedulers()
        if schedule is not None:
            schedule.step()

    def _sam_ascent(self, x_s, y_s, x_t) -> list:
        """SAM's first half (dann/sam.py): the prediction path moved up its label loss's
        gradient by optimizer.sam_rho; the step's loss is then computed there."""
        if not self.method.forwards_source:
            raise ConfigError(
                "optimizer.sam_rho: SAM acts on the source label loss, which this method does not "
                "train on (it refines on the target alone); drop optimizer.sam_rho"
            )
        if self.automatic_optimization:
            raise ConfigError(
                "optimizer.sam_rho needs the module's own optimiser step: drop "
                "trainer.gradient_clip_val / accumulate_grad_batches (Lightning's loop), or sam_rho"
            )
        self.optimizers().zero_grad()
        _, logits = self._forward_training_batch(x_s, x_t)
        self.manual_backward(self._label_loss(logits[: len(x_s)], y_s))
        params = [*self.feature_extractor.parameters(), *self.classifier.parameters()]
        return sam.ascend(params, self.sam_rho)
