"""MDD and AFN (SAFN): their losses against hand computations, the direction of their gradients
(MDD: the adversary descends its loss, the features get the reversed gradient; SAFN: the norms
grow), their configs, and what a run logs. (Every method's runs on each kind of pair:
test_methods.py, test_tables.py, test_sequences.py, test_text.py.)"""

import math

import pytest
import torch
from torch import nn

from dann.errors import ConfigError
from dann.methods.afn import AFN
from dann.methods.mdd import MDD
from dann.train import build

# ---- MDD -------------------------------------------------------------------------------------


def _mdd_batch(num_source=5, num_target=3, in_features=4, num_classes=3, seed=0):
    """Features (requiring grad), classifier logits and an MDD with a hidden layer; unequal
    domain sizes, so that a loss averaged over the wrong rows would show."""
    torch.manual_seed(seed)
    n = num_source + num_target
    features = torch.randn(n, in_features, requires_grad=True)
    logits = torch.randn(n, num_classes, requires_grad=True)
    mdd = MDD(in_features, num_classes, hidden=[6], margin=3.0, weight=0.5)
    return mdd, features, logits, num_source


def _hand_mdd_loss(adversary, features, logits, num_source, margin, weight):
    """weight * (margin * mean_source -log p[k] + mean_target -log(1 - p[k])), row by row:
    k = the classifier's argmax (by a loop over its scores), p = softmax of the adversary's
    logits computed from exp / sum. Differentiable in the adversary and the features."""
    z = adversary(features)
    source, target = [], []
    for i in range(len(features)):
        scores = [float(s) for s in logits[i].detach()]
        k = max(range(len(scores)), key=lambda j: scores[j])
        exps = [torch.exp(z[i, j]) for j in range(z.shape[1])]
        p = exps[k] / sum(exps)
        (source if i < num_source else target).append(-torch.log(p if i < num_source else 1 - p))
    return weight * (margin * sum(source) / len(source) + sum(target) / len(target))


def test_mdd_loss_and_domain_read_out_match_a_hand_computation():
    mdd, features, logits, n = _mdd_batch()
    z = mdd.adversary(features).detach()
    # the pseudo-labels are the classifier's, not the adversary's: the batch must tell them apart
    assert (z.argmax(1) != logits.argmax(1)).any()
    out = mdd(features, logits, n, lambda_=0.7)
    expected = _hand_mdd_loss(mdd.adversary, features, logits, n, margin=3.0, weight=0.5)
    assert set(out.losses) == {"mdd_loss"}
    assert out.losses["mdd_loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    # "is target" = the adversary disagrees: log-odds log(1 - p[k]) - log p[k]
    for i in range(len(features)):
        k = int(logits[i].argmax())
        p = math.exp(z[i, k]) / sum(math.exp(v) for v in z[i].tolist())
        assert out.domain_logits[i].item() == pytest.approx(math.log((1 - p) / p), rel=1e-4)
    assert out.domain_targets.tolist() == [0] * n + [1] * (len(features) - n)
    mdd.eval()
    d = mdd.domain_logits(features, logits=logits)
    assert torch.allclose(d, out.domain_logits, atol=1e-6)  # no dropout: the same read-out
    with pytest.raises(ValueError, match="logits=classifier"):
        mdd.domain_logits(features)


def test_mdd_adversary_descends_the_loss_and_the_features_get_it_reversed():
    lambda_ = 0.3
    mdd, features, logits, n = _mdd_batch(seed=1)
    mdd(features, logits, n, lambda_).losses["mdd_loss"].backward()
    params = list(mdd.adversary.parameters())
    # the plain gradient of the hand loss (no reversal anywhere in it)
    loss = _hand_mdd_loss(mdd.adversary, features, logits, n, margin=3.0, weight=0.5)
    grads = torch.autograd.grad(loss, [features, *params])
    for p, g in zip(params, grads[1:], strict=True):
        assert torch.allclose(p.grad, g, atol=1e-6)  # the adversary: the loss's gradient
    assert torch.allclose(features.grad, -lambda_ * grads[0], atol=1e-6)  # features: reversed
    assert logits.grad is None  # the classifier is only read, through its argmax
    # what each party does with its gradient: a descent step of the adversary lowers the loss
    # (it maximises the discrepancy), one of the features raises it (they minimise it)
    with torch.no_grad():
        before = float(loss)
        for p in params:
            p -= 0.05 * p.grad
        after_adversary = float(_hand_mdd_loss(mdd.adversary, features, logits, n, 3.0, 0.5))
        for p, g in zip(params, grads[1:], strict=True):
            p += 0.05 * g  # back to where it was
        moved = features - 0.05 * features.grad
        after_features = float(_hand_mdd_loss(mdd.adversary, moved, logits, n, 3.0, 0.5))
    assert after_adversary < before < after_features


def test_mdd_loss_is_finite_for_a_certain_adversary():
    """p[k] -> 1 on a target row: 1 - p underflows in float32, the loss must not (log(1 - p)
    is computed from the logits)."""
    mdd = MDD(2, 2, hidden=[], margin=1.0)
    with torch.no_grad():
        mdd.adversary[0].weight.copy_(torch.tensor([[100.0, 0.0], [-100.0, 0.0]]))
        mdd.adversary[0].bias.zero_()
    features = torch.tensor([[-1.0, 0.0], [1.0, 0.0]], requires_grad=True)
    logits = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # target row: k = 0, p[0] = 1 - e^-200
    loss = mdd(features, logits, 1, 1.0).losses["mdd_loss"]
    loss.backward()
    assert torch.isfinite(loss) and loss.item() == pytest.approx(200.0, rel=1e-4)
    assert torch.isfinite(features.grad).all()


def test_mdd_adversary_copies_the_label_classifier(make_cfg):
    _, module, _ = build(
        make_cfg(
            "method=mdd",
            "backbone.classifier.hidden=[32,16]",
            "backbone.classifier.dropout=0.5",
            "backbone.classifier.batch_norm=true",
        )
    )
    mdd = module.method
    assert isinstance(mdd, MDD) and (mdd.margin, mdd.weight) == (4.0, 1.0)

    def layout(head):
        return [(type(m).__name__, tuple(p.shape for p in m.parameters())) for m in head]

    assert layout(mdd.adversary) == layout(module.classifier)
    assert any(isinstance(m, nn.BatchNorm1d) for m in mdd.adversary)
    assert any(isinstance(m, nn.Dropout) for m in mdd.adversary)
    assert mdd.adversary is not module.classifier and type(mdd).reverses_gradient


def test_mdd_rejects_a_non_positive_margin():
    with pytest.raises(ConfigError, match="method.margin=0"):
        MDD(4, 3, margin=0)


# ---- AFN (SAFN) ------------------------------------------------------------------------------


def test_safn_loss_and_gradient_match_a_hand_computation():
    torch.manual_seed(0)
    num_source, lambda_, weight, delta = 5, 0.6, 0.05, 1.5
    features = torch.randn(8, 4, requires_grad=True)  # 5 source rows, 3 target rows
    out = AFN(4, 3, delta_r=delta, weight=weight)(features, None, num_source, lambda_)
    assert set(out.losses) == {"afn_loss"} and out.domain_logits is None
    out.losses["afn_loss"].backward()
    # per row: (||h|| - (||h|| + delta))^2 = delta^2, so each domain's mean is delta^2; its
    # derivative in ||h_i|| is -2 delta / n_domain, times d||h||/dh = h / ||h||
    assert out.losses["afn_loss"].item() == pytest.approx(lambda_ * weight * 2 * delta**2)
    for i in range(8):
        h = features[i].detach().tolist()
        norm = math.sqrt(sum(v * v for v in h))
        n_domain = num_source if i < num_source else 8 - num_source
        expected = [lambda_ * weight * -2 * delta / n_domain * v / norm for v in h]
        assert features.grad[i].tolist() == pytest.approx(expected, rel=1e-5)


def test_safn_step_lengthens_every_feature_vector_and_lambda_zero_is_off():
    torch.manual_seed(1)
    extractor = nn.Linear(3, 5)
    x = torch.randn(10, 3)
    afn = AFN(5, 2)
    features = extractor(x)
    afn(features, None, 6, 1.0).losses["afn_loss"].backward()
    before = features.detach().norm(dim=1)
    with torch.no_grad():  # a gradient step on the feature extractor's weights
        for p in extractor.parameters():
            p -= 0.5 * p.grad
    after = extractor(x).detach().norm(dim=1)
    assert (after > before).all(), (before, after)
    # lambda = 0 (the control): no loss, no gradient
    features = extractor(x)
    loss = afn(features, None, 6, 0.0).losses["afn_loss"]
    assert loss.item() == 0.0
    assert torch.autograd.grad(loss, features)[0].abs().max() == 0
    assert AFN.weights_by_lambda and not AFN.reverses_gradient


def test_safn_rejects_a_non_positive_step():
    with pytest.raises(ConfigError, match="method.delta_r=0"):
        AFN(4, 3, delta_r=0.0)


# ---- end to end ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "logged", "not_logged"),
    [
        ("mdd", {"train/mdd_loss", "train/domain_acc", "val/domain_acc"}, set()),
        ("afn", {"train/afn_loss"}, {"val/domain_acc"}),  # no domain read-out
    ],
)
def test_loss_terms_and_lambda_reach_the_logs(make_cfg, method, logged, not_logged):
    datamodule, module, trainer = build(
        make_cfg(
            f"method={method}",
            "schedule=constant",
            "schedule.value=0.5",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
        )
    )
    trainer.fit(module, datamodule=datamodule)
    metrics = trainer.callback_metrics
    assert logged | {"train/label_loss", "val/target_acc"} <= set(metrics)
    assert not not_logged & set(metrics)
    assert float(metrics["train/lambda"]) == 0.5  # both use lambda (GRL; loss weight)
    if method == "afn":  # lambda * weight * 2 delta_r^2, whatever the features
        assert float(metrics["train/afn_loss"]) == pytest.approx(0.5 * 0.05 * 2)
