"""Networks: backbones (feature extractors) and the MLP heads put on top of them."""

from dann.models.backbones import GTSRBDANN, SVHNDANN, DIRTTNet, GRUFeatures, LeNetDANN, LeNetDANNBN
from dann.models.heads import mlp_head
from dann.models.sequence import Conv1DFeatures

__all__ = [
    "Conv1DFeatures",
    "GRUFeatures",
    "GTSRBDANN",
    "DIRTTNet",
    "LeNetDANN",
    "LeNetDANNBN",
    "ResNetFeatures",
    "SVHNDANN",
    "TimmFeatures",
    "mlp_head",
]


def __getattr__(name: str):
    # ResNetFeatures needs torchvision, TimmFeatures timm (an optional extra): imported on first
    # use, so the heads and the small backbones (and `from dann import DANN`) load without them
    if name == "ResNetFeatures":
        from dann.models.resnet import ResNetFeatures

        return ResNetFeatures
    if name == "TimmFeatures":
        from dann.models.timm_features import TimmFeatures

        return TimmFeatures
    raise AttributeError(f"module 'dann.models' has no attribute {name!r}")
