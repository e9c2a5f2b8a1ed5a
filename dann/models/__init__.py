"""Networks: backbones (feature extractors) and the MLP heads put on top of them."""

from dann.models.backbones import LeNetDANN
from dann.models.heads import mlp_head

__all__ = ["LeNetDANN", "mlp_head"]
