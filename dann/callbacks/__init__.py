"""Callbacks for what is not part of the training step: figures, analysis, selection, and
reliability (RNG states in checkpoints, a checkpoint on interrupt, the divergence guard), the
weight average (EMA), a time-paced progress bar and a model summary without empty columns."""

from dann.callbacks.analysis import FeatureTSNE, ProxyADistance, ScalarLayout
from dann.callbacks.averaging import EMA
from dann.callbacks.figures import DecisionBoundaryFigure
from dann.callbacks.progress import ProgressBar
from dann.callbacks.reliability import DivergenceGuard, InterruptCheckpoint, RNGStates
from dann.callbacks.selection import SelectionValidators
from dann.callbacks.summary import ModelSummary

__all__ = [
    "EMA",
    "DecisionBoundaryFigure",
    "DivergenceGuard",
    "FeatureTSNE",
    "InterruptCheckpoint",
    "ModelSummary",
    "ProgressBar",
    "ProxyADistance",
    "RNGStates",
    "ScalarLayout",
    "SelectionValidators",
]
