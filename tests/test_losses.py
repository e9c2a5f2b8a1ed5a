"""The shared loss terms (dann/losses.py) against hand computations on tiny batches: MCC with
explicit loops, BSP against numpy's SVD, VAT against the closed-form Hessian of a linear
softmax model; and which weight wins, the config's or the method's."""

import math

import numpy as np
import pytest
import torch

from dann.losses import (
    batch_spectral_penalty,
    mean_entropy,
    minimum_class_confusion,
    term_weights,
    virtual_adversarial,
)


def _mcc_by_hand(logits: list[list[float]], temperature: float) -> float:
    rows = []
    for row in logits:
        e = [math.exp(v / temperature) for v in row]
        rows.append([v / sum(e) for v in e])
    n, c = len(rows), len(rows[0])
    h = [-sum(p * math.log(p) for p in row) for row in rows]
    w = [1 + math.exp(-hi) for hi in h]
    w = [n * wi / sum(w) for wi in w]
    confusion = [[sum(w[i] * rows[i][a] * rows[i][b] for i in range(n)) for b in range(c)]
                 for a in range(c)]  # fmt: skip
    normalised = [[confusion[a][b] / sum(confusion[a]) for b in range(c)] for a in range(c)]
    return sum(normalised[a][b] for a in range(c) for b in range(c) if a != b) / c


def test_mcc_equals_the_papers_equations_computed_by_hand():
    logits = [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], [0.0, 0.0, 4.0]]
    for temperature in (1.0, 2.5):
        got = minimum_class_confusion(torch.tensor(logits, dtype=torch.float64), temperature)
        assert float(got) == pytest.approx(_mcc_by_hand(logits, temperature), rel=1e-12)


def test_mcc_is_low_for_confident_distinct_classes_and_high_for_confusion():
    confident = torch.eye(4) * 20.0  # each row a different class, near one-hot
    confused = torch.zeros(4, 4)  # every row uniform over the classes
    assert float(minimum_class_confusion(confident, 1.0)) < 1e-6
    assert float(minimum_class_confusion(confused, 1.0)) == pytest.approx(3 / 4)


def test_mean_entropy_by_hand():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    by_hand = (math.log(2) + -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))) / 2
    assert float(mean_entropy(logits)) == pytest.approx(by_hand, rel=1e-6)


def test_bsp_is_the_sum_of_the_largest_squared_singular_values():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(6, 4, generator=g, dtype=torch.float64)
    singular = np.linalg.svd(features.numpy(), compute_uv=False)
    for k in (1, 2):
        got = float(batch_spectral_penalty(features, k))
        assert got == pytest.approx(float((singular[:k] ** 2).sum()), rel=1e-10)
    # a gradient step on it shrinks the largest singular value
    f = features.clone().requires_grad_()
    batch_spectral_penalty(f, 1).backward()
    stepped = (features - 0.01 * f.grad).numpy()
    assert np.linalg.svd(stepped, compute_uv=False)[0] < singular[0]


def test_vat_perturbs_along_the_power_iteration_of_the_hessian():
    """predict(x) = x W: at d = 0 the cross-entropy to the model's own prediction has zero
    gradient; its Hessian in d is W (diag(p) - p p^T) W^T, so one power iteration from the
    random start r gives the direction H r / |H r|. The loss is the cross-entropy between p
    and the prediction at x + radius * that direction, row by row."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, generator=g, dtype=torch.float64)
    w = torch.randn(5, 4, generator=g, dtype=torch.float64)
    logits = x @ w
    torch.manual_seed(7)
    got = virtual_adversarial(lambda inputs: inputs @ w, x, logits, radius=0.5)
    torch.manual_seed(7)
    start = torch.randn_like(x)  # the same random start the function draws
    expected = []
    for i in range(len(x)):
        p = logits[i].softmax(0)
        hessian = w @ (torch.diag(p) - torch.outer(p, p)) @ w.T
        direction = hessian @ start[i]
        direction = direction / direction.norm()
        q = ((x[i] + 0.5 * direction) @ w).log_softmax(0)
        expected.append(float(-(p * q).sum()))
    assert got.tolist() == pytest.approx(expected, rel=1e-4)


def test_vat_gradient_reaches_the_model_not_the_target_prediction():
    w = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, 5, dtype=torch.float64)
    logits = x @ w
    loss = virtual_adversarial(lambda inputs: inputs @ w, x, logits, radius=1.0).mean()
    (grad,) = torch.autograd.grad(loss, w)
    assert grad.abs().sum() > 0
    # the prediction being matched is detached: only the perturbed forward carries gradient
    loss_detached_model = virtual_adversarial(
        lambda inputs: inputs @ w.detach(), x, logits, radius=1.0
    ).mean()
    assert not loss_detached_model.requires_grad


def test_term_weights_config_overrides_the_method_null_defers_to_it():
    method = {"target_entropy": 0.01, "vat_target": 0.01, "vat_source": 1.0}
    weights = term_weights({"target_entropy": None, "vat_target": 0.0, "mcc": 2.0}, method)
    assert weights == {
        "target_entropy": 0.01,  # null: the method's
        "mcc": 2.0,  # the config's
        "bsp": 0.0,  # neither
        "vat_source": 1.0,  # absent from the config: the method's
        "vat_target": 0.0,  # 0 in the config turns the method's off
        "teacher": 0.0,
    }
