"""BatchNorm across domains (dann.models.norm): which rows each mode normalises together, which
running statistics it updates and evaluates with, AdaBN's recomputation, and that source-only
never puts a target image through a training-mode BatchNorm."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from dann.errors import ConfigError
from dann.methods import DANN
from dann.models.norm import (
    SOURCE,
    TARGET,
    DomainBatchNorm,
    convert_batchnorm,
    domain_norms,
    recompute_statistics,
    set_domains,
)
from dann.module import BATCH_NORMS
from dann.train import build


def _tiny(mode: str, eval_stats: str) -> tuple[nn.Sequential, DomainBatchNorm]:
    net = convert_batchnorm(nn.Sequential(nn.BatchNorm1d(3)), mode, eval_stats)
    return net, net[0]


def _batch():
    torch.manual_seed(0)
    return torch.randn(8, 3) * 2 + 5, torch.randn(8, 3) * 0.5 - 3  # source rows, target rows


@pytest.mark.parametrize("mode", ["separate", "domain_specific"])
def test_per_domain_batch_statistics_are_per_domain(mode):
    x_s, x_t = _batch()
    net, bn = _tiny(mode, "per_domain")
    set_domains([bn], split=8)
    out = net(torch.cat([x_s, x_t]))
    for rows in (out[:8], out[8:]):  # each domain's rows normalised by its own statistics
        torch.testing.assert_close(rows.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
        torch.testing.assert_close(rows.var(0, unbiased=False), torch.ones(3), atol=1e-3, rtol=0)
    # one step of momentum 0.1 from (0, 1): each slot moved towards its own domain only
    torch.testing.assert_close(bn.running_mean[SOURCE], 0.1 * x_s.mean(0))
    torch.testing.assert_close(bn.running_mean[TARGET], 0.1 * x_t.mean(0))
    torch.testing.assert_close(bn.running_var[TARGET], 0.9 + 0.1 * x_t.var(0))
    assert bn.weight.shape[0] == (2 if mode == "domain_specific" else 1)


def test_joint_mode_mixes_the_domains_and_is_plain_batchnorm():
    x_s, x_t = _batch()
    net, bn = _tiny("joint", "shared")
    assert isinstance(bn, nn.BatchNorm1d)  # nothing to convert: plain BatchNorm is joint
    out = net(torch.cat([x_s, x_t]))
    assert out[:8].mean() > 0.5 and out[8:].mean() < -0.5  # the domains stay apart
    torch.testing.assert_close(bn.running_mean, 0.1 * torch.cat([x_s, x_t]).mean(0))


def test_separate_with_shared_statistics_updates_source_then_target():
    """What two forward passes (source, then target) through one BatchNorm give."""
    x_s, x_t = _batch()
    net, bn = _tiny("separate", "shared")
    set_domains([bn], split=8)
    net(torch.cat([x_s, x_t]))
    expected = 0.9 * (0.1 * x_s.mean(0)) + 0.1 * x_t.mean(0)
    torch.testing.assert_close(bn.running_mean[0], expected)
    reference = nn.BatchNorm1d(3)
    reference(x_s), reference(x_t)
    torch.testing.assert_close(bn.running_mean[0], reference.running_mean)
    torch.testing.assert_close(bn.running_var[0], reference.running_var)


def test_evaluation_uses_the_named_domains_statistics():
    x_s, x_t = _batch()
    net, bn = _tiny("separate", "per_domain")
    bn.momentum = 1.0  # running statistics = the last batch's
    set_domains([bn], split=8)
    net(torch.cat([x_s, x_t]))
    net.eval()
    set_domains([bn], domain=TARGET)
    assert net(x_t).mean().abs() < 1e-4  # target data, target statistics: centred
    set_domains([bn], domain=SOURCE)
    assert net(x_t).mean() < -3  # target data, source statistics: far off


def test_adabn_recomputes_each_domains_statistics_from_its_data_in_eval_mode():
    torch.manual_seed(0)
    net = convert_batchnorm(
        nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Dropout(0.9)), "joint", "adabn"
    )
    norms = domain_norms(net)
    batches = [torch.randn(16, 3) + 7 for _ in range(3)]
    net.train()
    recompute_statistics(net, norms, batches, TARGET)
    with torch.no_grad():
        h = net[0](torch.cat(batches))
    # the plain average over all batches (momentum None), not an exponential one
    torch.testing.assert_close(norms[0].running_mean[TARGET], h.mean(0))
    torch.testing.assert_close(norms[0].running_mean[SOURCE], torch.zeros(3))  # untouched
    assert norms[0].momentum == 0.1 and net.training and net[2].training  # modes restored


def test_bad_combinations_name_the_fix():
    with pytest.raises(ConfigError, match="per_domain needs per-domain batches"):
        DomainBatchNorm(3, mode="joint", eval_stats="per_domain")
    with pytest.raises(ConfigError, match="choose one of joint, separate, domain_specific"):
        DomainBatchNorm(3, mode="split")


def test_pretrained_statistics_are_copied_into_every_domain():
    bn = nn.BatchNorm2d(4)
    bn.running_mean.fill_(2.0)
    bn.weight.data.fill_(3.0)
    new = DomainBatchNorm.from_batchnorm(bn, mode="domain_specific", eval_stats="per_domain")
    assert (new.running_mean == 2.0).all() and (new.weight == 3.0).all()
    assert new.running_mean.shape == new.weight.shape == (2, 4)


BN_NET = [
    "backbone=lenet_dann_bn",
    "backbone.classifier.batch_norm=true",
    "backbone.domain_head.norm=batch",
    "norm=separate",
    "norm.eval_stats=per_domain",
]


def test_every_batchnorm_of_the_prediction_path_is_converted(make_cfg):
    _, module, _ = build(make_cfg(*BN_NET))
    path = (module.feature_extractor, module.classifier)
    plain = [m for p in path for m in p.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert not plain
    # backbone (2), label head (2); the domain head's BatchNorm is its own (plain)
    assert len(domain_norms(module)) == len(module._norms) == 4


@pytest.mark.parametrize("method", ["dann", "daan", "cdan"])
@pytest.mark.parametrize("norm", ["joint", "separate", "domain_specific", "adabn"])
def test_the_discriminators_are_never_normalised_per_domain(make_cfg, norm, method):
    """`norm=` converts the prediction path only: the discriminators (DANN's domain head, DAAN's
    global and class-wise ones, CDAN's) keep one plain BatchNorm1d per hidden layer, with one
    set of affine parameters and statistics (backbone.domain_head.norm=batch)."""
    overrides = [*BN_NET[:3], f"norm={norm}", f"method={method}"]
    _, module, _ = build(make_cfg(*overrides))
    assert not domain_norms(module.method)
    norms = [m for m in module.method.modules() if isinstance(m, BATCH_NORMS)]
    heads = 1 + (10 if method == "daan" else 0)  # DAAN: global + one per class
    assert len(norms) == heads
    for bn in norms:
        assert type(bn) is nn.BatchNorm1d
        assert bn.weight.shape == bn.bias.shape == bn.running_mean.shape == (bn.num_features,)
    # the prediction path is still converted (plain BatchNorm is what joint does)
    assert len(module._norms) == (0 if norm == "joint" else 4)
    _, none, _ = build(make_cfg(*BN_NET[:2], f"norm={norm}", f"method={method}"))
    assert not [m for m in none.method.modules() if isinstance(m, BATCH_NORMS)]  # default: none


def test_a_batchnorm_discriminator_normalises_the_mixed_batch_jointly(make_cfg):
    """Source rows = target rows + c: per-domain whitening inside the domain head (what
    `norm=separate` did to it before it had its own choice) would make both halves identical;
    one BatchNorm over the mixed batch keeps the shift."""
    _, module, _ = build(make_cfg(*BN_NET, "method=dann"))
    module.train()
    set_domains(module._norms, split=8)  # what a training step says to the BatchNorm layers
    torch.manual_seed(0)
    f = torch.randn(8, module.feature_extractor.out_features)
    features = torch.cat([f + 3.0, f])  # the source rows shifted by a constant
    head = module.method.discriminator
    hidden = head[0](features)
    normalised = head[1](hidden)
    bn = head[1]
    expected = (hidden[:8] - hidden[8:]) / (hidden.var(0, unbiased=False) + bn.eps).sqrt()
    torch.testing.assert_close(normalised[:8] - normalised[8:], expected * bn.weight)
    d = module.method(features, None, 8, 1.0).domain_logits  # the training call, behind the GRL
    assert (d[:8] - d[8:]).abs().max() > 1e-3  # the shift reaches the domain logits
    with pytest.raises(ConfigError, match="choose one of none, batch, separate"):
        DANN(5, 3, norm="domain_specific")
    assert isinstance(DANN(5, 3, batch_norm=True).discriminator[1], nn.BatchNorm1d)  # old name
    with pytest.raises(ConfigError, match="disagree"):
        DANN(5, 3, norm="none", batch_norm=True)


class _Batches:
    """A datamodule's AdaBN interface: each domain's unlabelled inputs, shifted per domain."""

    def unlabelled_batches(self, domain, device, max_samples):
        torch.manual_seed(1)
        shift = 0.0 if domain == "source" else 2.0
        return [torch.rand(16, 3, 28, 28) + shift for _ in range(2)]


def test_a_separate_discriminator_standardises_each_domain_with_shared_parameters(make_cfg):
    """backbone.domain_head.norm=separate: per-domain statistics, one set of affine parameters
    (never one per domain), and the module marks the discriminator's rows in every training
    step, for source-only too (its discriminator sees both domains' features)."""
    for method in ("dann", "source_only"):
        _, module, _ = build(
            make_cfg(*BN_NET[:3], f"method={method}", "backbone.domain_head.norm=separate")
        )
        norms = domain_norms(module.method)
        assert len(norms) == 1 and norms[0].weight.shape == (1, 100)  # [100]: shared, not (2, 100)
        module.train()
        x_s, x_t = torch.rand(6, 3, 28, 28), torch.rand(10, 3, 28, 28)
        module._forward_training_batch(x_s, x_t)
        assert norms[0].split == 6
    torch.manual_seed(0)
    f = torch.randn(8, module.feature_extractor.out_features)
    head = module.method.discriminator
    hidden = head[0](torch.cat([f + 3.0, f]))
    set_domains(norms, split=8)
    normalised = head[1](hidden)
    # each half standardised on its own: the constant shift is gone
    torch.testing.assert_close(normalised[:8], normalised[8:], atol=1e-4, rtol=1e-4)


def test_adabn_re_estimates_the_prediction_path_and_leaves_the_discriminator_alone(make_cfg):
    overrides = [*BN_NET[:3], "norm=adabn", "method=dann"]
    _, module, _ = build(make_cfg(*overrides))
    module.train()
    x_s, x_t = torch.rand(8, 3, 28, 28), torch.rand(8, 3, 28, 28) + 5.0
    features, logits = module._forward_training_batch(x_s, x_t)
    module.method(features, logits, 8, 1.0)  # the discriminator's statistics move
    disc = {k: v.clone() for k, v in module.method.state_dict().items() if "running" in k}
    assert disc and all(v.abs().sum() > 0 for k, v in disc.items() if k.endswith("mean"))
    path = {m: m.running_mean.clone() for m in module._norms}
    module._trainer = SimpleNamespace(datamodule=_Batches())
    try:
        module._adapt_statistics()
    finally:
        module._trainer = None
    after = module.method.state_dict()
    for k, v in disc.items():
        torch.testing.assert_close(after[k], v, rtol=0, atol=0)  # untouched, not reset
    # exactly the converted layers, every one of them, re-estimated from both domains' inputs
    assert set(module._norms) == set(domain_norms(module)) and len(module._norms) == 4
    for m, before in path.items():
        assert m.batches_seen == 2
        assert not torch.equal(m.running_mean[SOURCE], before[SOURCE])
        assert not torch.equal(m.running_mean[TARGET], before[TARGET])
    assert module.training  # modes restored


def test_adabn_refuses_a_layer_its_forward_never_reaches():
    net = convert_batchnorm(nn.Sequential(nn.BatchNorm1d(3), nn.BatchNorm1d(3)), "joint", "adabn")
    norms = domain_norms(net)
    with pytest.raises(ValueError, match="1 of 2 DomainBatchNorm layers were not reached"):
        recompute_statistics(net, norms, [torch.randn(4, 3)], TARGET, run=net[0])


def test_source_only_never_normalises_with_target_images(make_cfg):
    """The source-only baseline's BatchNorm statistics come from source images alone (the
    target rows pass in eval mode, for the detached domain classifier only)."""
    _, module, _ = build(make_cfg(*BN_NET, "method=source_only"))
    module.train()
    x_s, x_t = torch.rand(6, 3, 28, 28), torch.rand(6, 3, 28, 28) + 10.0
    before = {k: v.clone() for k, v in module.state_dict().items() if "running" in k}
    features, logits = module._forward_training_batch(x_s, x_t)
    assert features.shape[0] == logits.shape[0] == 12
    logits[6:].sum().backward()  # no gradient from the target rows reaches any weight
    assert all(p.grad is None or not p.grad.any() for p in module.parameters())
    assert module.training and module.feature_extractor.training  # modes restored
    after = module.state_dict()
    for k, v in before.items():
        if k.endswith("running_mean") and not k.startswith("method."):  # prediction path
            moved = after[k] - v
            assert moved[TARGET].abs().max() == 0, k  # the target slot never moved
            assert moved[SOURCE].abs().max() < 0.5, k  # the source slot saw [0, 1) images only
    # the adapting method does put both domains through training-mode BatchNorm
    _, dann, _ = build(make_cfg(*BN_NET, "method=dann"))
    dann.train()
    dann._forward_training_batch(x_s, x_t)
    stats = dann.feature_extractor.net[1].running_mean
    assert stats[TARGET].abs().max() > stats[SOURCE].abs().max() > 0
