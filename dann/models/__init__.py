"""Networks: backbones (feature extractors) and the MLP heads put on top of them."""

from dann.models.backbones import GTSRBDANN, SVHNDANN, GRUFeatures, LeNetDANN, LeNetDANNBN
from dann.models.heads import mlp_head
from dann.models.resnet import ResNetFeatures

__all__ = [
    "GRUFeatures",
    "GTSRBDANN",
    "LeNetDANN",
    "LeNetDANNBN",
    "ResNetFeatures",
    "SVHNDANN",
    "mlp_head",
]
