"""Feature extractors. Each takes `in_channels` and `image_size` and exposes `out_features`,
so heads can be sized without knowing the backbone."""

import torch
from torch import nn


def _infer_out_features(features: nn.Module, in_channels: int, image_size: int) -> int:
    with torch.no_grad():
        return int(features(torch.zeros(1, in_channels, image_size, image_size)).shape[1])


class LeNetDANN(nn.Module):
    """The DANN paper's MNIST feature extractor (JMLR 2016, Fig. 4 / ICML 2015 appendix):
    conv5x5-32, ReLU, maxpool 2x2; conv5x5-48, ReLU, maxpool 2x2; flatten (768 for 28x28)."""

    def __init__(self, in_channels: int = 3, image_size: int = 28):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 48, kernel_size=5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.out_features = _infer_out_features(self.net, in_channels, image_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
