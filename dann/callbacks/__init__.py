"""Callbacks for what is not part of the training step: figures, analysis, selection, and
reliability (RNG states in checkpoints, a checkpoint on interrupt, the divergence guard)."""

from dann.callbacks.analysis import FeatureTSNE, ProxyADistance, ScalarLayout
from dann.callbacks.figures import DecisionBoundaryFigure
from dann.callbacks.reliability import DivergenceGuard, InterruptCheckpoint, RNGStates
from dann.callbacks.selection import SelectionValidators

__all__ = [
    "DecisionBoundaryFigure",
    "DivergenceGuard",
    "FeatureTSNE",
    "InterruptCheckpoint",
    "ProxyADistance",
    "RNGStates",
    "ScalarLayout",
    "SelectionValidators",
]
