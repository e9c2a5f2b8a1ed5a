"""Callbacks for extras that are not part of the training step: figures, analysis, selection."""

from dann.callbacks.analysis import FeatureTSNE, ProxyADistance, ScalarLayout
from dann.callbacks.figures import DecisionBoundaryFigure
from dann.callbacks.selection import SelectionValidators

__all__ = [
    "DecisionBoundaryFigure",
    "FeatureTSNE",
    "ProxyADistance",
    "ScalarLayout",
    "SelectionValidators",
]
