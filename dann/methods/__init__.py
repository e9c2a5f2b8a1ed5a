"""Adaptation methods, one file each, all with the `AdaptationMethod` interface."""

from dann.methods.afn import AFN
from dann.methods.base import AdaptationMethod, AdaptationOutput
from dann.methods.bsp import BSP
from dann.methods.cdan import CDAN
from dann.methods.coral import CORAL
from dann.methods.daan import DAAN
from dann.methods.dan import DAN
from dann.methods.dann import DANN
from dann.methods.dirt_t import DIRTT
from dann.methods.jan import JAN
from dann.methods.mcc import MCC
from dann.methods.mdd import MDD
from dann.methods.osbp import OSBP
from dann.methods.ovanet import OVANet
from dann.methods.pada import PADA
from dann.methods.source_only import SourceOnly
from dann.methods.target_oracle import TargetOracle
from dann.methods.vada import VADA

__all__ = [
    "AFN",
    "BSP",
    "CDAN",
    "CORAL",
    "DAAN",
    "DAN",
    "DANN",
    "DIRTT",
    "JAN",
    "MCC",
    "MDD",
    "OSBP",
    "OVANet",
    "PADA",
    "VADA",
    "AdaptationMethod",
    "AdaptationOutput",
    "SourceOnly",
    "TargetOracle",
]
