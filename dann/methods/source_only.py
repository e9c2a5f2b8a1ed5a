"""Source-only baseline (the lower bound): the same network as DANN, but no gradient from the
domain classifier reaches the features. The domain classifier still trains on detached features,
so `domain_acc` shows how separable the un-adapted features are. Target images never pass
through a training-mode layer: the module computes their features in eval mode, without
gradient, so BatchNorm statistics come from source images alone; with the same seed the feature
extractor and label classifier start from the same weights as the DANN run."""

import torch

from dann.methods.dann import DANN


class SourceOnly(DANN):
    reverses_gradient = False  # logged lambda is 0: no gradient reaches the features
    forwards_target = False  # target images never pass a training-mode layer (BatchNorm)

    def reverse(self, features: torch.Tensor, lambda_: float) -> torch.Tensor:
        return features.detach()
