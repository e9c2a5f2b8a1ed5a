"""Evaluate a checkpoint: `python eval.py ckpt_path=<run dir>/checkpoints/<file>.ckpt
[dataset=<pair>] [split=test|val]`, the lightning-hydra-template entry point beside train.py.

It runs scripts/evaluate.py (the one implementation) with the same arguments: accuracy,
per-class accuracy and confusion matrices of the checkpoint, in outputs/eval/<date>_<time>/.
`python train.py train=false ckpt_path=...` tests a checkpoint the way a training run ends
(the SUMMARY line) instead."""

import runpy
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "scripts" / "evaluate.py"

if __name__ == "__main__":
    sys.argv[0] = str(SCRIPT)
    runpy.run_path(str(SCRIPT), run_name="__main__")
