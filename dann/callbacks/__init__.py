"""Callbacks for extras that are not part of the training step: figures, analysis."""

from dann.callbacks.figures import DecisionBoundaryFigure

__all__ = ["DecisionBoundaryFigure"]
