"""Third-party messages a normal run would print that say nothing about the run, filtered
narrowly (by exact message and origin), each with its reason. What the project can prevent at
the source it prevents there instead: PAD's SVM solves the primal (dann/analysis.py, no
ConvergenceWarning), loaders pin memory only for an accelerator (dann/data/datamodule.py), the
model summary drops the FLOPs it cannot count (dann/callbacks/summary.py).

`filter_known_warnings()` is called by `dann.train.build`; calling it again changes nothing.
"""

import logging
import warnings

# Lightning's own (pytorch_lightning/utilities/_pytree.py) use of torch's `LeafSpec`, deprecated
# in torch 2.10: nothing a user of Lightning 2.6 can change; gone when Lightning stops using it
LEAFSPEC = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
LEAFSPEC_ORIGIN = r"pytorch_lightning\.utilities\._pytree"
# ModelCheckpoint's warning when its directory holds files: dann.train refuses a fresh run into
# a run directory that already holds checkpoints, so the files are there only on a resume
# (ckpt_path=...), which writes into the run's own directory by design
CHECKPOINT_DIR = r"Checkpoint directory .* exists and is not empty"


class _DropTip(logging.Filter):
    """Lightning's "💡 Tip: ... try installing litlogger" on every Trainer: an advertisement
    for a cloud service, not about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


_TIP_FILTER = _DropTip()


def filter_known_warnings() -> None:
    warnings.filterwarnings("ignore", LEAFSPEC, FutureWarning, LEAFSPEC_ORIGIN)
    warnings.filterwarnings("ignore", CHECKPOINT_DIR, UserWarning, r"pytorch_lightning\.")
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if _TIP_FILTER not in logger.filters:
            logger.addFilter(_TIP_FILTER)
