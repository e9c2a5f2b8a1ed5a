"""DAN, JAN and Deep CORAL: each loss pinned against a hand computation (explicit loops over
pairs of rows and over covariance entries), zero for identical source and target batches and
growing with a shift between them, lambda weighting it (lambda = 0 switches it off, end to end
too), its gradient and its float32 arithmetic under bf16 autocast. (Every method's runs on each kind
of pair: test_methods.py, test_tables.py, test_sequences.py, test_text.py.)"""

import math

import pytest
import torch
from test_sequences import files  # noqa: F401 (the sequences pair's npz files, a fixture)

from dann.errors import ConfigError
from dann.methods.coral import CORAL
from dann.methods.dan import DAN
from dann.methods.jan import JAN
from dann.train import build

ALPHAS = [2.0**k for k in range(-3, 2)]  # tllib's bandwidth multipliers
METHODS = {"dan": (DAN, "mmd_loss"), "jan": (JAN, "jmmd_loss"), "coral": (CORAL, "coral_loss")}


def _rows(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) + shift


# --- hand computations ------------------------------------------------------------------------


def _sq(a, b) -> float:
    return sum((float(x) - float(y)) ** 2 for x, y in zip(a, b, strict=True))


def _hand_mmd(rows: list, num_source: int, kernel) -> float:
    """mean k(s, s') + mean k(t, t') - 2 mean k(s, t) over every ordered pair (the V-statistic),
    as explicit double loops."""
    source, target = rows[:num_source], rows[num_source:]

    def mean_k(a, b):
        return sum(kernel(x, y) for x in a for y in b) / (len(a) * len(b))

    return mean_k(source, source) + mean_k(target, target) - 2 * mean_k(source, target)


def _bandwidth_base(features: torch.Tensor) -> float:
    """tllib's GaussianKernel: the mean squared distance over all (N x N) ordered pairs."""
    n = len(features)
    return sum(_sq(features[i], features[j]) for i in range(n) for j in range(n)) / n**2


def _hand_dan(features: torch.Tensor, num_source: int) -> float:
    base = _bandwidth_base(features)
    indices = list(range(len(features)))

    def k(i, j):
        d2 = _sq(features[i], features[j])
        return sum(math.exp(-d2 / (2 * a * base)) for a in ALPHAS)

    return _hand_mmd(indices, num_source, k)


def _hand_jan(features: torch.Tensor, logits: torch.Tensor, num_source: int, sigma=0.92) -> float:
    base = _bandwidth_base(features)
    probs = [[math.exp(v) / sum(math.exp(u) for u in row) for v in row] for row in logits.tolist()]
    indices = list(range(len(features)))

    def k(i, j):
        d2 = _sq(features[i], features[j])
        feature_kernel = sum(math.exp(-d2 / (2 * a * base)) for a in ALPHAS)
        return feature_kernel * math.exp(-_sq(probs[i], probs[j]) / (2 * sigma**2))

    return _hand_mmd(indices, num_source, k)


def _hand_covariance(x: torch.Tensor) -> list[list[float]]:
    rows = x.tolist()
    n, d = len(rows), len(rows[0])
    mean = [sum(r[a] for r in rows) / n for a in range(d)]
    return [
        [sum((r[a] - mean[a]) * (r[b] - mean[b]) for r in rows) / (n - 1) for b in range(d)]
        for a in range(d)
    ]


def _hand_coral(features: torch.Tensor, num_source: int, mean_difference=False) -> float:
    source, target = features[:num_source], features[num_source:]
    cs, ct = _hand_covariance(source), _hand_covariance(target)
    d = features.shape[1]
    loss = sum((cs[a][b] - ct[a][b]) ** 2 for a in range(d) for b in range(d)) / (4 * d * d)
    if mean_difference:
        ms, mt = source.mean(0).tolist(), target.mean(0).tolist()
        loss += sum((x - y) ** 2 for x, y in zip(ms, mt, strict=True)) / d
    return loss


# --- the losses --------------------------------------------------------------------------------


@pytest.mark.parametrize(("num_source", "num_target"), [(4, 4), (5, 3)])
def test_dan_loss_is_the_hand_computed_mk_mmd(num_source, num_target):
    features = torch.cat([_rows(num_source, 3, 0), _rows(num_target, 3, 1, shift=0.7)])
    out = DAN(3, 2, weight=1.5)(features, None, num_source, lambda_=0.4)
    assert set(out.losses) == {"mmd_loss"}
    expected = 1.5 * 0.4 * _hand_dan(features, num_source)
    assert float(out.losses["mmd_loss"]) == pytest.approx(expected, rel=1e-9)
    assert out.domain_logits is None and out.domain_targets is None


@pytest.mark.parametrize(("num_source", "num_target"), [(4, 4), (5, 3)])
def test_jan_loss_is_the_hand_computed_joint_mmd(num_source, num_target):
    features = torch.cat([_rows(num_source, 3, 2), _rows(num_target, 3, 3, shift=0.5)])
    logits = 2 * _rows(num_source + num_target, 4, 4)
    out = JAN(3, 4, weight=2.0)(features, logits, num_source, lambda_=0.3)
    assert set(out.losses) == {"jmmd_loss"}
    expected = 2.0 * 0.3 * _hand_jan(features, logits, num_source)
    assert float(out.losses["jmmd_loss"]) == pytest.approx(expected, rel=1e-9)
    # the product kernel is not the feature kernel alone: the predictions count
    assert expected != pytest.approx(2.0 * 0.3 * _hand_dan(features, num_source), rel=1e-3)


@pytest.mark.parametrize("mean_difference", [False, True])
@pytest.mark.parametrize(("num_source", "num_target"), [(4, 4), (5, 3)])
def test_coral_loss_is_the_hand_computed_covariance_distance(
    num_source, num_target, mean_difference
):
    features = torch.cat([_rows(num_source, 3, 5), 1.5 * _rows(num_target, 3, 6, shift=0.3)])
    method = CORAL(3, 2, weight=0.5, mean_difference=mean_difference)
    out = method(features, None, num_source, lambda_=2.0)
    assert set(out.losses) == {"coral_loss"}
    expected = 0.5 * 2.0 * _hand_coral(features, num_source, mean_difference)
    assert float(out.losses["coral_loss"]) == pytest.approx(expected, rel=1e-9)
    assert out.domain_logits is None


def _loss(name: str, features: torch.Tensor, logits: torch.Tensor, lambda_=1.0) -> torch.Tensor:
    cls, key = METHODS[name]
    method = cls(features.shape[1], logits.shape[1])
    return method(features, logits, len(features) // 2, lambda_).losses[key]


@pytest.mark.parametrize("name", ["dan", "jan"])
def test_mmd_is_zero_for_identical_batches_and_grows_with_a_shift(name):
    source, logits = _rows(4, 3, 7), _rows(4, 2, 8)
    losses = [
        float(_loss(name, torch.cat([source, source + s]), torch.cat([logits, logits + s])))
        for s in (0.0, 0.25, 0.5, 1.0, 2.0)
    ]
    assert abs(losses[0]) < 1e-12
    assert all(a < b for a, b in zip(losses, losses[1:], strict=False)), losses


def test_coral_is_zero_for_a_translation_and_grows_with_a_scaling():
    """CORAL compares second-order statistics only: a shift of the target's mean costs nothing
    (unless mean_difference adds tllib's mean term); a rescaling of the target does."""
    source, none = _rows(4, 3, 9), torch.zeros(8, 2)
    assert float(_loss("coral", torch.cat([source, source]), none)) < 1e-12
    assert float(_loss("coral", torch.cat([source, source + 3.0]), none)) < 1e-12
    with_mean = CORAL(3, 2, mean_difference=True)(torch.cat([source, source + 3.0]), none, 4, 1.0)
    assert float(with_mean.losses["coral_loss"]) == pytest.approx(9.0)  # (3^2 * 3) / 3
    losses = [float(_loss("coral", torch.cat([source, s * source]), none)) for s in (1, 1.5, 2, 3)]
    assert all(a < b for a, b in zip(losses, losses[1:], strict=False)), losses


@pytest.mark.parametrize("name", ["dan", "jan", "coral"])
def test_lambda_weights_the_loss_and_zero_switches_it_off(name):
    features = torch.cat([_rows(4, 3, 10), 2 * _rows(4, 3, 11, shift=1.0)]).requires_grad_()
    logits = _rows(8, 2, 12).requires_grad_()
    full = float(_loss(name, features, logits, lambda_=1.0).detach())
    assert full > 0
    quarter = _loss(name, features, logits, lambda_=0.25).detach()
    assert float(quarter) == pytest.approx(0.25 * full)
    off = _loss(name, features, logits, lambda_=0.0)
    assert float(off.detach()) == 0.0
    off.backward()
    assert not features.grad.any() and (logits.grad is None or not logits.grad.any())
    cls = METHODS[name][0]
    assert cls.weights_by_lambda and not cls.reverses_gradient
    assert cls(3, 2).domain_logits(features.detach(), logits.detach()) is None


@pytest.mark.parametrize("name", ["dan", "jan", "coral"])
def test_a_gradient_step_on_the_features_lowers_the_loss(name):
    """The features descend the loss (no reversal): a small step against its gradient, on the
    source and the target rows alike, brings the two batches closer."""
    features = torch.cat([_rows(4, 3, 13), 2 * _rows(4, 3, 14, shift=1.0)]).requires_grad_()
    logits = _rows(8, 2, 15).requires_grad_()
    loss = _loss(name, features, logits)
    loss.backward()
    assert features.grad[:4].abs().sum() > 0 and features.grad[4:].abs().sum() > 0
    # only JAN reads the predictions, and its gradient reaches them (not detached)
    assert (logits.grad is not None and logits.grad.abs().sum() > 0) == (name == "jan")
    logits_grad = torch.zeros_like(logits) if logits.grad is None else logits.grad
    with torch.no_grad():
        stepped = _loss(name, features - 1e-3 * features.grad, logits - 1e-3 * logits_grad)
    assert float(stepped) < float(loss.detach())


@pytest.mark.parametrize("name", ["dan", "jan"])
def test_mmd_gradient_treats_the_bandwidth_as_a_constant(name):
    """tllib's bandwidths follow the batch but are detached: the gradient is that of the kernels
    at a fixed sigma, here the one autograd gives through a reference with sigma a constant."""
    features = torch.cat([_rows(4, 3, 16), _rows(4, 3, 17, shift=0.8)]).requires_grad_()
    logits = _rows(8, 2, 18)
    _loss(name, features, logits).backward()
    f = features.detach()
    base = float(((f[:, None] - f[None]) ** 2).sum(-1).mean())
    x = features.detach().clone().requires_grad_()
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    kernel = sum(torch.exp(-d2 / (2 * a * base)) for a in ALPHAS)
    if name == "jan":
        p = logits.softmax(1)
        kernel = kernel * torch.exp(-((p[:, None] - p[None]) ** 2).sum(-1) / (2 * 0.92**2))
    w = torch.tensor([0.25] * 4 + [-0.25] * 4, dtype=x.dtype)
    (w @ kernel @ w).backward()
    torch.testing.assert_close(features.grad, x.grad, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("name", ["dan", "jan", "coral"])
def test_losses_are_computed_in_float32_under_bf16_autocast(name):
    """Under bf16 autocast (trainer.precision=bf16-mixed) the distances and covariances still
    come out of float32 arithmetic: the same loss as in plain float32."""
    features = torch.cat([_rows(6, 8, 19), 1.3 * _rows(6, 8, 20, shift=0.4)]).float()
    features = features.bfloat16().float()  # values bf16 holds exactly
    logits = _rows(12, 3, 21).float()
    reference = _loss(name, features, logits)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = _loss(name, features, logits)
    assert mixed.dtype == torch.float32
    assert float(mixed) == pytest.approx(float(reference), rel=1e-5)


def test_bad_settings_name_the_valid_choices():
    with pytest.raises(ConfigError, match=r"method.alphas=\[\].*positive"):
        DAN(3, 2, alphas=[])
    with pytest.raises(ConfigError, match=r"method.alphas=\[1.0, -0.5\].*positive"):
        JAN(3, 2, alphas=[1.0, -0.5])
    with pytest.raises(ConfigError, match="method.softmax_sigma=0.*positive"):
        JAN(3, 2, softmax_sigma=0)
    with pytest.raises(ValueError, match="at least 2 rows per domain.*batch_size"):
        CORAL(3, 2)(torch.randn(3, 3), None, 2, 1.0)


def test_identical_rows_give_finite_losses():
    """All rows equal (dead features): the bandwidth base is 0, floored; no 0/0."""
    features, logits = torch.zeros(8, 3, requires_grad=True), torch.zeros(8, 2)
    for name in METHODS:
        loss = _loss(name, features, logits)
        loss.backward()
        assert float(loss.detach()) == 0.0 and torch.isfinite(features.grad).all()


# --- through the framework ---------------------------------------------------------------------


def test_configs_build_the_papers_defaults(make_cfg):
    dan = build(make_cfg("method=dan"))[1].method
    assert isinstance(dan, DAN) and dan.weight == 1.0 and dan.alphas == tuple(ALPHAS)
    jan = build(make_cfg("method=jan"))[1].method
    assert isinstance(jan, JAN) and jan.alphas == tuple(ALPHAS) and jan.softmax_sigma == 0.92
    coral = build(make_cfg("method=coral"))[1].method
    assert isinstance(coral, CORAL) and coral.weight == 1.0 and not coral.mean_difference


@pytest.mark.parametrize("method", ["dan", "jan", "coral"])
def test_the_loss_reaches_the_logs_and_lambda_zero_silences_it(make_cfg, method):
    key = f"train/{METHODS[method][1]}"
    limits = [
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.log_every_n_steps=1",
    ]
    for value, silent in ((1.0, False), (0.0, True)):
        schedule = ["schedule=constant", f"schedule.value={value}"]
        cfg = make_cfg("dataset=moons", f"method={method}", *schedule, *limits)
        datamodule, module, trainer = build(cfg)
        trainer.fit(module, datamodule=datamodule)
        metrics = trainer.callback_metrics
        assert {key, "train/lambda", "train/label_loss"} <= set(metrics)
        assert float(metrics["train/lambda"]) == value
        assert (float(metrics[key]) == 0.0) == silent
        assert "train/domain_acc" not in metrics and "val/domain_acc" not in metrics
