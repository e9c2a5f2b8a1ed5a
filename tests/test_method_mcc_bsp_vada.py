"""MCC, BSP and VADA as methods: each loss against a hand computation on a tiny batch, lambda's
role in each (MCC's weight; BSP's and VADA's GRL, VADA's scaled by its domain weight), and
VADA's shared terms reaching a run's logs with its weights, overridable from the config."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_losses import _mcc_by_hand

from dann.methods.bsp import BSP
from dann.methods.dann import DANN
from dann.methods.mcc import MCC
from dann.methods.vada import VADA
from dann.train import build


def _batch(seed: int = 0, n: int = 3, width: int = 5, classes: int = 4):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(2 * n, width, generator=g, dtype=torch.float64)
    logits = torch.randn(2 * n, classes, generator=g, dtype=torch.float64)
    return features, logits, n


def test_mcc_is_lambda_times_weight_times_the_target_rows_class_confusion():
    features, logits, n = _batch()
    method = MCC(5, 4, weight=0.5, temperature=2.5).double()
    out = method(features, logits, n, lambda_=0.3)
    by_hand = 0.3 * 0.5 * _mcc_by_hand(logits[n:].tolist(), 2.5)
    assert float(out.losses["mcc"]) == pytest.approx(by_hand, rel=1e-10)
    assert float(method(features, logits, n, 0.0).losses["mcc"]) == 0.0
    assert method.weights_by_lambda and not method.reverses_gradient
    assert method.domain_logits(features, logits) is None


def test_bsp_adds_the_squared_top_singular_values_to_dannns_domain_loss():
    features, logits, n = _batch(1)
    torch.manual_seed(0)
    bsp = BSP(5, 4, hidden=[3], bsp_weight=0.01).double()
    torch.manual_seed(0)
    dann = DANN(5, 4, hidden=[3]).double()  # the same discriminator weights
    out = bsp(features, logits, n, 1.0)
    domain = dann(features, logits, n, 1.0).losses["domain_loss"]
    top = [np.linalg.svd(f.numpy(), compute_uv=False)[0] for f in (features[:n], features[n:])]
    assert float(out.losses["domain_loss"].detach()) == pytest.approx(
        float(domain.detach()), rel=1e-12
    )
    assert float(out.losses["bsp"]) == pytest.approx(0.01 * (top[0] ** 2 + top[1] ** 2))


def test_vada_reverses_lambda_times_its_domain_weight_into_the_features():
    features, logits, n = _batch(2)
    method = VADA(5, 4, hidden=[3], domain_weight=0.01).double()
    f = features.clone().requires_grad_()
    method(f, logits, n, lambda_=0.5).losses["domain_loss"].backward()
    reversed_grad = f.grad.clone()
    # the discriminator's own gradient with respect to its input, without the GRL
    g = features.clone().requires_grad_()
    d = method.target_logit(method.discriminator(g))
    t = torch.tensor([0.0] * n + [1.0] * n, dtype=torch.float64)
    F.binary_cross_entropy_with_logits(d, t).backward()
    torch.testing.assert_close(reversed_grad, -0.5 * 0.01 * g.grad)


def test_vada_brings_its_terms_and_the_config_overrides_them(make_cfg):
    module = build(make_cfg("method=vada"))[1]
    assert module.term_weights == {
        "target_entropy": 0.01,
        "mcc": 0.0,
        "bsp": 0.0,
        "vat_source": 1.0,
        "vat_target": 0.01,
        "teacher": 0.0,
    }
    module = build(make_cfg("method=vada", "loss.vat_source=0", "loss.mcc=1"))[1]
    assert module.term_weights["vat_source"] == 0.0 and module.term_weights["mcc"] == 1.0
    assert module.term_weights["vat_target"] == 0.01


def test_vada_logs_each_term_of_its_loss(make_cfg):
    cfg = make_cfg(
        "method=vada",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
    )
    datamodule, module, trainer = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    metrics = trainer.callback_metrics
    for term in ("domain_loss", "target_entropy", "vat_source", "vat_target"):
        assert torch.isfinite(metrics[f"train/{term}"]) and float(metrics[f"train/{term}"]) > 0
    # the total is the label loss plus every term
    parts = ("label_loss", "domain_loss", "target_entropy", "vat_source", "vat_target")
    total = sum(float(metrics[f"train/{p}"]) for p in parts)
    assert float(metrics["train/loss"]) == pytest.approx(total, rel=1e-5)
