import math

import pytest
import torch

from dann import schedules
from dann.module import DALightningModule


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("gamma", [5.0, 10.0])
def test_grl_sigmoid_matches_paper(p, gamma):
    # 2 / (1 + exp(-g p)) - 1 == tanh(g p / 2): an independent form of the same formula
    assert schedules.grl_sigmoid(p, gamma=gamma) == pytest.approx(math.tanh(gamma * p / 2))
    assert schedules.grl_sigmoid(p, gamma, lambda_max=0.3) == pytest.approx(
        0.3 * math.tanh(gamma * p / 2)
    )


def test_grl_sigmoid_paper_values():
    assert schedules.grl_sigmoid(0.0) == 0.0
    assert schedules.grl_sigmoid(0.5) == pytest.approx(0.986614, abs=1e-6)
    assert schedules.grl_sigmoid(1.0) == pytest.approx(0.999909, abs=1e-6)


def test_lr_annealing_paper_constants():
    # mu_p / mu_0 = 1 / (1 + 10 p)^0.75
    assert schedules.lr_annealing(0.0) == 1.0
    assert schedules.lr_annealing(0.5) == pytest.approx(6**-0.75)
    assert schedules.lr_annealing(1.0) == pytest.approx(11**-0.75)
    assert 0.01 * schedules.lr_annealing(1.0) == pytest.approx(0.0016556, abs=1e-7)


def test_constant_and_linear():
    assert [schedules.constant(p, 0.4) for p in (0, 0.5, 1)] == [0.4, 0.4, 0.4]
    assert [schedules.linear(p, 2.0) for p in (0, 0.5, 1)] == [0.0, 1.0, 2.0]
    assert schedules.linear(0.25, 1.0, ramp_until=0.5) == 0.5
    assert schedules.linear(0.9, 1.0, ramp_until=0.5) == 1.0


@pytest.mark.parametrize("fn", [schedules.grl_sigmoid, schedules.constant, schedules.linear])
def test_progress_outside_unit_interval_is_rejected(fn):
    with pytest.raises(ValueError, match="p must be in"):
        fn(1.5)


def test_module_lr_follows_mu_p(make_cfg):
    from dann.train import build

    cfg = make_cfg("trainer.max_steps=20")
    _, module, _ = build(cfg)
    module._stepping_batches = lambda: 20  # no trainer attached: pretend 20 total steps
    opt = module.configure_optimizers()
    optimizer, scheduler = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(21):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [0.01 * schedules.lr_annealing(k / 20) for k in range(21)]
    torch.testing.assert_close(torch.tensor(lrs), torch.tensor(expected))
    assert isinstance(module, DALightningModule)


def test_backbone_lr_multiplier_scales_only_the_feature_extractor(make_cfg):
    from dann.train import build

    _, module, _ = build(make_cfg("backbone.lr_mult=0.1"))
    module._stepping_batches = lambda: 10
    optimizer = module.configure_optimizers()["optimizer"]
    backbone_group, heads_group = optimizer.param_groups
    assert backbone_group["lr"] == pytest.approx(0.001) and heads_group["lr"] == 0.01
    assert len(backbone_group["params"]) == len(list(module.feature_extractor.parameters()))
    n_all = len(list(module.parameters()))
    assert len(backbone_group["params"]) + len(heads_group["params"]) == n_all


@pytest.mark.parametrize("lr_mult", [0.1, 1.0])
def test_logged_lr_is_the_base_rate_and_the_backbones_is_logged_apart(make_cfg, lr_mult):
    from conftest import logged_scalars

    from dann.train import run

    summary = run(
        make_cfg(
            f"backbone.lr_mult={lr_mult}",
            "callbacks=none",
            "trainer.max_steps=4",
            "trainer.limit_val_batches=0",
            "trainer.limit_test_batches=1",
            "trainer.log_every_n_steps=1",
        )
    )
    logged = logged_scalars(summary["log_dir"])
    lr, base = logged["train/lr"], 0.01  # optimizer.optim.lr of the default sgd_paper
    assert sorted(lr) == [0, 1, 2, 3]
    for step, value in lr.items():  # the schedule's rate, without the backbone multiplier
        assert value == pytest.approx(base * schedules.lr_annealing(step / 4), rel=1e-6)
    if lr_mult == 1.0:
        assert "train/lr_backbone" not in logged  # one rate: nothing to tell apart
    else:
        backbone = logged["train/lr_backbone"]
        assert backbone.keys() == lr.keys()
        for step in lr:
            assert backbone[step] == pytest.approx(lr_mult * lr[step], rel=1e-6)
