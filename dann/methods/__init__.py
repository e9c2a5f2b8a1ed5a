"""Adaptation methods, one file each, all with the `AdaptationMethod` interface."""

from dann.methods.base import AdaptationMethod, AdaptationOutput
from dann.methods.cdan import CDAN
from dann.methods.daan import DAAN
from dann.methods.dann import DANN
from dann.methods.source_only import SourceOnly
from dann.methods.target_oracle import TargetOracle

__all__ = [
    "CDAN",
    "DAAN",
    "DANN",
    "AdaptationMethod",
    "AdaptationOutput",
    "SourceOnly",
    "TargetOracle",
]
