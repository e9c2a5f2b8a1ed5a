"""Adaptation methods, one file each, all with the `AdaptationMethod` interface."""

from dann.methods.base import AdaptationMethod, AdaptationOutput
from dann.methods.dann import DANN
from dann.methods.source_only import SourceOnly

__all__ = ["DANN", "AdaptationMethod", "AdaptationOutput", "SourceOnly"]
