"""The target oracle, DAAN and CDAN(+E): end-to-end runs, losses, DAAN's dynamic factor, the
multilinear maps, entropy weights, and gradient reversal into the features."""

import contextlib
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from conftest import METHODS, run_and_recount
from torch import nn

from dann.methods import CDAN, DAAN, TargetOracle
from dann.methods.base import domain_targets
from dann.methods.cdan import MultilinearMap, RandomizedMultilinearMap, entropy_weights
from dann.methods.daan import dynamic_factor
from dann.train import build


@pytest.mark.parametrize("method", METHODS)
def test_fast_dev_run(make_cfg, method):
    summary, recount = run_and_recount(make_cfg(f"method={method}", "trainer.fast_dev_run=true"))
    for key in ("test/source_acc", "test/target_acc"):  # what the tested weights score
        assert summary[key] == pytest.approx(recount[key], abs=1e-6), key


@pytest.mark.parametrize(
    ("method", "logged"),
    [
        ("daan", {"train/global_domain_loss", "train/local_domain_loss", "train/omega"}),
        ("cdan_e", {"train/domain_loss"}),
        ("target_oracle", {"train/domain_loss"}),
    ],
)
def test_method_loss_terms_reach_the_logs(make_cfg, method, logged):
    datamodule, module, trainer = build(
        make_cfg(
            f"method={method}",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=3",
            "trainer.limit_val_batches=1",
        )
    )
    steps = _record_daan_steps(module) if method == "daan" else None
    trainer.fit(module, datamodule=datamodule)
    metrics = trainer.callback_metrics
    assert logged | {"train/label_loss", "train/lambda", "val/target_acc"} <= set(metrics)
    if method == "daan":
        assert len(steps) == 3
        # the epoch's omega: the paper's formula on the discriminators' answers of the 3 steps
        omega = _paper_omega(steps)
        assert omega != 0.5  # (0.5 is where it started: the check would say nothing)
        assert float(metrics["train/omega"]) == pytest.approx(omega, abs=1e-6)
        # the last step's losses, weighted by the omega of that epoch (the initial 0.5)
        d_global, d_local, probs, t = steps[-1]
        bce = F.binary_cross_entropy_with_logits
        global_loss = 0.5 * bce(d_global, t)
        local_loss = 0.5 * sum(bce(d_local[:, c], t) for c in range(d_local.shape[1]))
        assert float(metrics["train/global_domain_loss"]) == pytest.approx(float(global_loss))
        assert float(metrics["train/local_domain_loss"]) == pytest.approx(float(local_loss))


def _record_daan_steps(module) -> list:
    """Per training step of `module`'s DAAN: (global discriminator logits (N,), local ones
    (N, C), class probabilities (N, C), domain targets (N,)), read with hooks on the layers."""
    daan, steps, step = module.method, [], {}

    def method_inputs(_, args):
        features, logits, num_source, _lambda = args
        t = torch.ones(len(features))
        t[:num_source] = 0
        step.update(probs=logits.detach().softmax(1), t=t, local=[])

    def global_out(layer, _, out):
        if layer.training:
            step["global"] = out.detach()[:, 0]

    def local_out(layer, _, out):
        if layer.training:
            step["local"].append(out.detach()[:, 0])
            if len(step["local"]) == len(daan.local_discriminators):
                local = torch.stack(step["local"], dim=1)
                steps.append((step["global"], local, step["probs"], step["t"]))

    daan.register_forward_pre_hook(method_inputs)
    daan.discriminator.register_forward_hook(global_out)
    for disc in daan.local_discriminators:
        disc.register_forward_hook(local_out)
    return steps


def _paper_omega(steps) -> float:
    """DAAN's omega = d_g / (d_g + mean_c d_c), d = 2 (1 - 2 error) clipped to [0, 2]; the local
    error of class c counts each row with weight p_c (see dann/methods/daan.py)."""
    d_global, d_local, probs, t = (torch.cat(parts) for parts in zip(*steps, strict=True))
    error_global = ((d_global > 0).float() != t).float().mean()
    wrong_local = ((d_local > 0).float() != t[:, None]).float()
    error_local = (probs * wrong_local).sum(0) / probs.sum(0)
    distance = lambda e: min(max(2 * (1 - 2 * float(e)), 0.0), 2.0)  # noqa: E731
    d_g, d_l = distance(error_global), sum(map(distance, error_local)) / len(error_local)
    return 0.5 if d_g + d_l == 0 else d_g / (d_g + d_l)


def test_configs_build_the_named_methods(make_cfg):
    _, module, _ = build(make_cfg("method=cdan_e"))
    cdan = module.method
    assert isinstance(cdan, CDAN) and cdan.entropy_conditioning
    # the paper's MNIST net: 768 features * 10 classes > 4096 -> randomized map of size 1024
    assert isinstance(cdan.map, RandomizedMultilinearMap) and cdan.map.out_features == 1024
    assert not build(make_cfg("method=cdan"))[1].method.entropy_conditioning
    daan = build(make_cfg("method=daan"))[1].method
    assert isinstance(daan, DAAN) and len(daan.local_discriminators) == 10
    assert float(daan.omega) == 0.5


def _batch(in_features=3, num_classes=2, n=6, seed=0):
    torch.manual_seed(seed)
    return torch.randn(n, in_features), torch.randn(n, num_classes)


@pytest.mark.parametrize(
    ("make_method", "keys"),
    [
        (lambda: DAAN(3, 2, hidden=[5]), {"global_domain_loss", "local_domain_loss"}),
        (lambda: CDAN(3, 2, hidden=[5]), {"domain_loss"}),
        (lambda: CDAN(3, 2, hidden=[5], entropy_conditioning=True), {"domain_loss"}),
        (lambda: CDAN(3, 2, max_multilinear_dim=4, randomized_dim=8), {"domain_loss"}),
    ],
    ids=["daan", "cdan", "cdan_e", "cdan_randomized"],
)
def test_losses_present_and_finite(make_method, keys):
    method = make_method()
    features, logits = _batch()
    out = method(features, logits, num_source=3, lambda_=1.0)
    assert set(out.losses) == keys
    assert all(v.ndim == 0 for v in out.losses.values())
    assert out.domain_logits.shape == (6,)
    assert out.domain_targets.tolist() == [0, 0, 0, 1, 1, 1]
    # the (global) domain loss is the BCE of the returned domain logits: plain for CDAN, times
    # 1 - omega (0.5 at the start) for DAAN; CDAN+E's weighted loss is checked further down
    bce = F.binary_cross_entropy_with_logits(out.domain_logits, out.domain_targets)
    if isinstance(method, DAAN):
        torch.testing.assert_close(out.losses["global_domain_loss"], 0.5 * bce)
    elif not method.entropy_conditioning:
        torch.testing.assert_close(out.losses["domain_loss"], bce)
    assert method.domain_logits(features, logits).shape == (6,)


# --- DAAN --------------------------------------------------------------------------------------


def test_dynamic_factor_from_known_errors():
    chance, perfect = torch.tensor(0.5), torch.tensor(0.0)
    # perfect global discriminator, chance-level local ones: only the global distance is large
    assert dynamic_factor(perfect, torch.full((10,), 0.5)) == pytest.approx(1.0)
    assert dynamic_factor(chance, torch.zeros(10)) == pytest.approx(0.0)
    assert dynamic_factor(perfect, torch.zeros(10)) == pytest.approx(0.5)
    assert dynamic_factor(chance, torch.full((10,), 0.5)) == 0.5  # 0 / 0: equal weights
    # d_g = 2(1 - 2 * 0.25) = 1; d_l = mean(2, 0) = 1
    assert dynamic_factor(torch.tensor(0.25), torch.tensor([0.0, 0.5])) == pytest.approx(0.5)
    # errors above chance are clipped to distance 0, never a negative omega
    assert dynamic_factor(torch.tensor(0.9), torch.tensor([0.4, 0.6])) == pytest.approx(0.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        e_global, e_local = torch.rand((), generator=g), torch.rand(4, generator=g)
        d_g = min(max(2 * (1 - 2 * float(e_global)), 0.0), 2.0)
        d_l = sum(min(max(2 * (1 - 2 * float(e)), 0.0), 2.0) for e in e_local) / 4
        expected = 0.5 if d_g + d_l == 0 else d_g / (d_g + d_l)
        assert dynamic_factor(e_global, e_local) == pytest.approx(expected)


class _Fixed(nn.Module):
    """A discriminator reading "is target" off feature 0 (perfect) or answering 0 (chance)."""

    def __init__(self, perfect: bool):
        super().__init__()
        self.perfect = perfect

    def forward(self, x):
        return (10 * x[:, :1]) if self.perfect else torch.zeros(len(x), 1)


def _epoch(daan: DAAN, steps: int = 3) -> dict:
    for _ in range(steps):
        features = torch.cat([-torch.ones(4, 3), torch.ones(4, 3)])  # source rows, target rows
        logits = torch.zeros(8, 2)  # p_c = 1/2 on every row: the weighted errors are plain
        daan(features, logits, num_source=4, lambda_=1.0)
    return daan.on_train_epoch_end()


def test_daan_omega_tracks_discriminator_errors_each_epoch():
    daan = DAAN(3, 2, hidden=[5])
    assert float(daan.omega) == 0.5  # initial value, as in the official code
    daan.discriminator = _Fixed(perfect=True)
    daan.local_discriminators = nn.ModuleList([_Fixed(False), _Fixed(False)])
    assert _epoch(daan) == {"omega": pytest.approx(1.0)}
    assert float(daan.omega) == pytest.approx(1.0)
    # the next epoch starts from fresh counts: global at chance, locals perfect -> omega 0
    daan.discriminator = _Fixed(perfect=False)
    daan.local_discriminators = nn.ModuleList([_Fixed(True), _Fixed(True)])
    assert _epoch(daan)["omega"] == pytest.approx(0.0)
    # an epoch without batches keeps omega as it was
    assert daan.on_train_epoch_end()["omega"] == pytest.approx(0.0)


def test_daan_omega_weights_the_losses():
    daan = DAAN(3, 2, hidden=[5])
    features, logits = _batch()
    daan.omega.fill_(0.0)
    assert daan(features, logits, 3, 1.0).losses["local_domain_loss"] == 0
    daan.omega.fill_(1.0)
    assert daan(features, logits, 3, 1.0).losses["global_domain_loss"] == 0


def _feature_grads(daan, net, x, logits, term, reverse=True):
    net.zero_grad()
    daan.zero_grad()
    if not reverse:  # the no-GRL reference: the same loss, features handed on unchanged
        daan.reverse = lambda f, lam: f
    out = daan(net(x), logits, num_source=3, lambda_=0.5)
    if not reverse:
        del daan.reverse
    out.losses[term].backward()
    disc = daan.discriminator if term == "global_domain_loss" else daan.local_discriminators
    return [p.grad.clone() for p in net.parameters()], [p.grad.clone() for p in disc.parameters()]


@pytest.mark.parametrize("term", ["global_domain_loss", "local_domain_loss"])
def test_daan_reverses_the_gradient_into_the_features(term):
    torch.manual_seed(0)
    net, daan = nn.Linear(4, 3), DAAN(3, 2, hidden=[5])
    x, logits = torch.randn(6, 4), torch.randn(6, 2)
    ref_feat, ref_disc = _feature_grads(daan, net, x, logits, term, reverse=False)
    feat, disc = _feature_grads(daan, net, x, logits, term, reverse=True)
    for g, r in zip(disc, ref_disc, strict=True):
        torch.testing.assert_close(g, r)  # discriminators learn at full strength
    for g, r in zip(feat, ref_feat, strict=True):
        assert r.abs().sum() > 0
        torch.testing.assert_close(g, -0.5 * r)  # features: reversed, scaled by lambda


# --- CDAN --------------------------------------------------------------------------------------


def test_multilinear_map_is_the_flattened_outer_product():
    f, g = torch.randn(5, 3), torch.randn(5, 2).softmax(1)
    out = MultilinearMap(3, 2)(f, g)
    assert out.shape == (5, 6)
    torch.testing.assert_close(out.view(5, 2, 3), g[:, :, None] * f[:, None, :])


def test_randomized_map_above_the_threshold_only():
    assert isinstance(CDAN(3, 2, max_multilinear_dim=6).map, MultilinearMap)  # 6 <= 6
    cdan = CDAN(3, 2, max_multilinear_dim=5, randomized_dim=16, random_seed=7)
    assert isinstance(cdan.map, RandomizedMultilinearMap)
    assert cdan.discriminator[0].in_features == 16
    f, g = torch.randn(5, 3), torch.randn(5, 2).softmax(1)
    expected = (f @ cdan.map.r_f) * (g @ cdan.map.r_g) / 4.0
    torch.testing.assert_close(cdan.map(f, g), expected)
    # fixed, seeded, saved with the model and not trained
    again = CDAN(3, 2, max_multilinear_dim=5, randomized_dim=16, random_seed=7)
    assert torch.equal(again.map.r_f, cdan.map.r_f) and torch.equal(again.map.r_g, cdan.map.r_g)
    assert {"map.r_f", "map.r_g"} <= set(cdan.state_dict())
    assert not any(n.startswith("map.") for n, _ in cdan.named_parameters())


def test_entropy_weights_above_one_and_larger_when_confident():
    probs = torch.tensor([[1 / 3, 1 / 3, 1 / 3], [0.6, 0.3, 0.1], [0.98, 0.01, 0.01]])
    w = entropy_weights(probs)
    assert (w > 1).all() and (w <= 2).all()
    assert w[0] < w[1] < w[2]
    assert w[0] == pytest.approx(1 + 1 / 3)  # exp(-log 3)


def test_cdan_e_weights_normalised_per_domain():
    cdan = CDAN(3, 2, hidden=[5], entropy_conditioning=True)
    features, logits = _batch(n=5)  # 2 source, 3 target rows
    out = cdan(features, logits, num_source=2, lambda_=1.0)
    w = entropy_weights(logits.softmax(1))
    bce = F.binary_cross_entropy_with_logits(
        out.domain_logits, domain_targets(2, 5, "cpu"), reduction="none"
    )
    expected = 0.5 * (w[:2] @ bce[:2]) / w[:2].sum() + 0.5 * (w[2:] @ bce[2:]) / w[2:].sum()
    torch.testing.assert_close(out.losses["domain_loss"], expected)
    # equal confidence everywhere and equal domain sizes: plain CDAN's mean BCE
    flat = torch.zeros(6, 2)
    plain = CDAN(3, 2, hidden=[5])
    plain.load_state_dict(cdan.state_dict())
    f6 = torch.randn(6, 3)
    torch.testing.assert_close(
        cdan(f6, flat, 3, 1.0).losses["domain_loss"], plain(f6, flat, 3, 1.0).losses["domain_loss"]
    )


@pytest.mark.parametrize("entropy", [False, True])
def test_cdan_reverses_the_gradient_into_the_features_and_entropy_weights(entropy):
    """Everything the discriminator sends back is reversed (x -lambda): into the features, and
    with CDAN+E also into the classifier through the entropy weights, which the official code
    does not detach (thuml/CDAN loss.CDAN: entropy.register_hook(grl_hook(coeff))). Plain CDAN
    sends nothing to the classifier: the multilinear map's predictions are detached."""
    torch.manual_seed(0)
    net = nn.Linear(4, 3)
    cdan = CDAN(3, 2, hidden=[5], entropy_conditioning=entropy)
    x = torch.randn(6, 4)
    logits = torch.randn(6, 2, requires_grad=True)

    def grads(reverse: bool):
        net.zero_grad()
        cdan.zero_grad()
        logits.grad = None
        with (
            mock.patch("dann.methods.cdan.grad_reverse", lambda t, lam: t)
            if not reverse
            else (contextlib.nullcontext())
        ):
            if not reverse:
                cdan.reverse = lambda t, lam: t
            out = cdan(net(x), logits, num_source=3, lambda_=0.5)
            if not reverse:
                del cdan.reverse
        out.losses["domain_loss"].backward()
        to_classifier = None if logits.grad is None else logits.grad.clone()
        return (
            [p.grad.clone() for p in net.parameters()],
            [p.grad.clone() for p in cdan.discriminator.parameters()],
            to_classifier,
        )

    ref_feat, ref_disc, ref_cls = grads(reverse=False)
    feat, disc, cls = grads(reverse=True)
    for g, r in zip(disc, ref_disc, strict=True):
        torch.testing.assert_close(g, r)
    for g, r in zip(feat, ref_feat, strict=True):
        assert r.abs().sum() > 0
        torch.testing.assert_close(g, -0.5 * r)
    if entropy:
        assert ref_cls.abs().sum() > 0
        torch.testing.assert_close(cls, -0.5 * ref_cls)
    else:
        assert cls is None and ref_cls is None


def test_daan_local_errors_are_weighted_by_the_class_probability():
    """Rows a class is not predicted for (p_c ~ 0) must not pull its error towards chance: a
    local discriminator that is right on every row of its class counts as perfect."""
    daan = DAAN(3, 2, hidden=[4])
    targets = torch.tensor([0.0, 0.0, 1.0, 1.0])
    probs = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    d_global = torch.tensor([-1.0, -1.0, 1.0, 1.0])  # right everywhere
    # class 0's discriminator is right on rows 0-1 (its class) and wrong on rows 2-3 (p_0 = 0)
    d_local = torch.tensor([[-1.0, 1.0], [-1.0, 1.0], [-1.0, 1.0], [-1.0, 1.0]])
    daan._count_errors(d_global, d_local, targets, probs)
    daan.on_train_epoch_end()
    # class 0: weighted error 0 (its rows right); class 1: rows 2-3 right, rows 0-1 have p_1 = 0
    # -> both local A-distances 2, global 2 -> omega = 2 / (2 + 2)
    assert float(daan.omega) == pytest.approx(0.5)
    unweighted = dynamic_factor(torch.tensor(0.0), torch.tensor([0.5, 0.5]))
    assert unweighted == pytest.approx(1.0)  # what counting every row would have said


def test_cdan_domain_logits_need_the_predictions():
    with pytest.raises(ValueError, match="logits="):
        CDAN(3, 2).domain_logits(torch.randn(4, 3))


# --- target oracle -----------------------------------------------------------------------------


def test_target_oracle_trains_on_labelled_target_batches(make_cfg):
    datamodule, module, _ = build(make_cfg("method=target_oracle"))
    assert isinstance(module.method, TargetOracle) and not module.method.reverses_gradient
    datamodule.setup("fit")
    labelled = datamodule.train_dataloader().iterables["source"]
    target = datamodule.data.target.train
    assert labelled.inputs is target.inputs and labelled.labels is target.labels
    x, y = next(iter(labelled))
    flat_target = target.inputs.flatten(1)
    for xi, yi in zip(x.flatten(1), y, strict=True):
        rows = (flat_target == xi).all(dim=1).nonzero().flatten()
        assert len(rows) >= 1  # a target training image ...
        assert (target.labels[rows] == yi).all()  # ... with its own target label
