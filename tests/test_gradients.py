"""The domain classifier learns at full strength; the features get -lambda times its gradient."""

import torch
import torch.nn.functional as F
from torch import nn

from dann.methods import DANN, SourceOnly
from dann.methods.base import domain_targets


def _grads(module: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in module.parameters()]


def _setup(method_cls, seed=0):
    torch.manual_seed(seed)
    features = nn.Linear(4, 3)
    method = method_cls(in_features=3, num_classes=2, hidden=[5])
    x = torch.randn(6, 4)
    return features, method, x


def _reference_grads(features, method, x):
    """The same domain loss with no GRL at all."""
    features.zero_grad()
    method.zero_grad()
    f = features(x)
    d = method.discriminator(f).squeeze(1)
    F.binary_cross_entropy_with_logits(d, domain_targets(3, 6, f.device)).backward()
    return _grads(features), _grads(method.discriminator)


def test_dann_reverses_only_the_feature_gradient():
    features, method, x = _setup(DANN)
    ref_feat, ref_disc = _reference_grads(features, method, x)

    features.zero_grad()
    method.zero_grad()
    f = features(x)
    out = method(f, torch.zeros(6, 2), num_source=3, lambda_=0.5)
    out.losses["domain_loss"].backward()

    for g, r in zip(_grads(method.discriminator), ref_disc, strict=True):
        torch.testing.assert_close(g, r)  # discriminator: un-reversed, full strength
    for g, r in zip(_grads(features), ref_feat, strict=True):
        assert r.abs().sum() > 0
        torch.testing.assert_close(g, -0.5 * r)  # features: reversed and scaled by lambda


def test_source_only_discriminator_learns_but_features_get_nothing():
    features, method, x = _setup(SourceOnly)
    _, ref_disc = _reference_grads(features, method, x)

    features.zero_grad()
    method.zero_grad()
    out = method(features(x), torch.zeros(6, 2), num_source=3, lambda_=1.0)
    out.losses["domain_loss"].backward()

    for g, r in zip(_grads(method.discriminator), ref_disc, strict=True):
        torch.testing.assert_close(g, r)
    assert all(p.grad is None for p in features.parameters())


def test_domain_targets_source_zero_target_one():
    assert domain_targets(2, 5, torch.device("cpu")).tolist() == [0, 0, 1, 1, 1]
