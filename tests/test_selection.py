"""Unsupervised model selection and invariance measures on small shifts whose answer is known."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dann import analysis, selection
from dann.callbacks.selection import SelectionValidators, format_report
from dann.train import run

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def blobs(rng, means, n):
    """n points around each 2-D mean, with the mean's index as label."""
    x = np.concatenate([rng.normal(m, 0.7, size=(n, 2)) for m in means])
    return x, np.repeat(np.arange(len(means)), n)


def test_reverse_validation_prefers_the_model_that_is_right_on_the_target():
    rng = np.random.default_rng(0)
    xs, ys = blobs(rng, [(-2.5, 0), (2.5, 0)], 200)
    xt, yt = blobs(rng, [(-2.5, 0), (2.5, 0)], 200)
    xt = xt + (1.0, 1.0)  # the shift
    good = yt  # a model that labels the target correctly
    # one whose target predictions have nothing to do with the classes (it splits the target
    # along the axis the classes do not vary on)
    bad = (xt[:, 1] > np.median(xt[:, 1])).astype(int)
    good_score = selection.reverse_validation_acc(xs, ys, xt, good)
    bad_score = selection.reverse_validation_acc(xs, ys, xt, bad)
    assert good_score > 0.9 and bad_score < 0.7
    # a collapsed model (one class everywhere) scores the share of that class, no error
    assert selection.reverse_validation_acc(xs, ys, xt, np.zeros_like(yt)) == 0.5


def test_dev_risk_tracks_the_loss_where_the_target_lives():
    rng = np.random.default_rng(1)
    region_a = rng.normal((-3, 0), 1.0, size=(300, 2))
    region_b = rng.normal((3, 0), 1.0, size=(300, 2))
    source = np.concatenate([region_a, region_b])
    target = rng.normal((3, 0), 1.0, size=(300, 2))  # the target looks like region B only
    good_on_b = np.concatenate([np.full(300, 2.0), np.full(300, 0.1)])
    good_on_a = good_on_b[::-1].copy()
    assert good_on_b.mean() == pytest.approx(good_on_a.mean())  # source loss can't tell them apart
    risk_b = selection.dev_risk(source, good_on_b, target)
    risk_a = selection.dev_risk(source, good_on_a, target)
    assert risk_b < 0.6 < 1.5 < risk_a


def test_dev_risk_is_nan_not_an_error_on_too_few_examples():
    rng = np.random.default_rng(0)
    small = rng.normal(size=(selection.MIN_DEV_SAMPLES - 1, 4))
    assert np.isnan(selection.dev_risk(small, np.ones(len(small)), rng.normal(size=(50, 4))))


def test_density_ratio_is_about_one_for_identical_domains():
    rng = np.random.default_rng(2)
    w = selection.target_density_ratio(rng.normal(size=(400, 50)), rng.normal(size=(400, 50)))
    assert abs(w.mean() - 1) < 0.2 and w.max() < 5  # no exploding weights in 50-D


def test_entropy_and_snd_prefer_confident_clustered_predictions():
    g = torch.Generator().manual_seed(0)
    classes = torch.arange(500) % 10
    clustered = 6 * torch.nn.functional.one_hot(classes, 10) + 0.05 * torch.randn(
        500, 10, generator=g
    )
    scattered = 6 * torch.randn(500, 10, generator=g)  # confident too, but no two points agree
    diffuse = 0.1 * torch.randn(500, 10, generator=g)
    assert selection.prediction_entropy(clustered) < selection.prediction_entropy(diffuse)
    assert selection.soft_neighborhood_density(clustered) > selection.soft_neighborhood_density(
        scattered
    )


def test_proxy_a_distance_is_zero_for_identical_and_two_for_separable_domains():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(500, 20)), rng.normal(size=(500, 20))
    assert abs(analysis.proxy_a_distance(a, b)) < 0.3
    assert analysis.proxy_a_distance(a, b + 10) > 1.95


def test_proxy_a_distance_refuses_too_few_examples_with_a_clear_message():
    a = np.zeros((1, 3))
    with pytest.raises(ValueError, match="at least 4 examples per domain, got 1 source"):
        analysis.proxy_a_distance(a, np.ones((6, 3)))


def test_selection_configs_match_the_validators():
    selectable = {
        name: v for name, v in selection.VALIDATORS.items() if v[0] not in selection.NOT_SELECTABLE
    }
    for name, (metric, mode) in selectable.items():
        cfg = yaml.safe_load((CONFIGS / "selection" / f"{name}.yaml").read_text())
        assert cfg == {"metric": metric, "mode": mode}
    assert {p.stem for p in (CONFIGS / "selection").glob("*.yaml")} == set(selectable)


def test_snd_is_reported_but_refused_for_selection(make_cfg):
    """SND scores near-uniform predictions highest (README, Model selection): it stays in the
    report and the logs, and picking checkpoints with it is refused with the reason."""
    from dann.config_check import validate
    from dann.errors import ConfigError

    uniform, confident = torch.zeros(50, 10), torch.randn(50, 10) * 10
    assert selection.soft_neighborhood_density(uniform) > selection.soft_neighborhood_density(
        confident
    )
    assert "snd" in selection.VALIDATORS
    cfg = make_cfg("selection.metric=val/snd")
    with pytest.raises(ConfigError, match="not offered for selection: SND"):
        validate(cfg)


def test_report_picks_each_validators_best_epoch():
    cb = SelectionValidators()
    cb.history = [
        {"epoch": 0, "val/source_acc": 0.5, "val/dev_risk": 0.2, "val/target_acc": 0.3},
        {"epoch": 1, "val/source_acc": 0.9, "val/dev_risk": 0.9, "val/target_acc": 0.6},
        {"epoch": 2, "val/source_acc": 0.8, "val/dev_risk": 0.5, "val/target_acc": 0.7},
    ]
    report = cb.report()
    assert report["source_val"]["epoch"] == 1 and report["source_val"]["target_acc"] == 0.6
    assert report["dev"]["epoch"] == 0  # lower risk is better
    assert report["target_oracle"]["target_acc"] == 0.7
    assert "reverse_val" not in report  # never logged, so nothing to pick
    assert "+0.1000" in format_report(report)  # what source_val selection cost


def test_run_with_dev_selection_checkpoints_the_lowest_risk_epoch(make_cfg, tmp_path):
    cfg = make_cfg(
        "selection=dev",
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "~callbacks.proxy_a_distance",
        "~callbacks.feature_tsne",
    )
    summary = run(cfg)
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    history = saved["selection"]
    best = history["dev"]
    assert Path(summary["checkpoint"]).name == f"epoch_{best['epoch']:03d}.ckpt"
    assert summary["selected_val/dev_risk"] == pytest.approx(best["score"])
    assert set(history) == set(selection.VALIDATORS)
    assert all(0 <= r["target_acc"] <= 1 for r in history.values())


def test_report_covers_the_whole_run_when_an_early_checkpoint_is_tested(make_cfg, tmp_path):
    """trainer.test(ckpt_path=<an early pick>) restores the callbacks' state from that checkpoint:
    the report must still see every validation epoch, so the oracle's best epoch is the run's
    (later than the pick here) and the pick's cost is positive."""
    import csv

    cfg = make_cfg(
        "dataset=moons",
        "optimizer=adam",
        "selection.metric=val/step",  # the first epoch: a pick that is not the oracle's best
        "selection.mode=min",
        "logger=csv",
        "trainer.max_epochs=6",
        "trainer.limit_train_batches=2",
        "callbacks.selection_validators.max_samples=200",
        "~callbacks.proxy_a_distance",
        "~callbacks.feature_tsne",
    )
    summary = run(cfg)
    assert Path(summary["checkpoint"]).name == "epoch_000.ckpt"
    rows = list(csv.DictReader(open(tmp_path / "run" / "csv" / "metrics.csv")))
    logged = {int(r["epoch"]): float(r["val/target_acc"]) for r in rows if r.get("val/target_acc")}
    assert sorted(logged) == list(range(6))
    best_epoch = max(logged, key=logged.get)
    assert logged[best_epoch] > logged[0]  # the setup: the run improves after its first epoch
    report = json.loads((tmp_path / "run" / "summary.json").read_text())["selection"]
    assert report["target_oracle"]["epoch"] == best_epoch
    assert report["target_oracle"]["target_acc"] == pytest.approx(logged[best_epoch])
    assert report["last"]["epoch"] == 5
    cost = report["target_oracle"]["target_acc"] - logged[0]
    assert cost > 0 and f"{cost:+.4f}" in format_report(report)


def test_restoring_a_checkpoint_merges_histories_instead_of_cutting_back():
    full = [{"epoch": e, "step": 10 * (e + 1), "val/target_acc": e / 10} for e in range(5)]
    cb = SelectionValidators()
    cb.history = list(full)
    cb.load_state_dict({"history": full[:2]})  # the state saved with epoch 1's checkpoint
    assert cb.history == full
    resumed = SelectionValidators()  # a new process resuming from last.ckpt
    resumed.load_state_dict({"history": full[:3]})
    assert resumed.history == full[:3]


def test_one_standard_error_rule_picks_the_latest_epoch_it_cannot_tell_from_the_best():
    """Source accuracy on 400 images: 0.9825 at epoch 6, 0.9775 later (one standard error of
    0.9825 is 0.0066): the rule picks the latest epoch within it; a clear drop is not picked."""
    n = 400
    acc = {0: 0.90, 6: 0.9825, 17: 0.975, 21: 0.9775, 29: 0.9775, 30: 0.95}
    cb = SelectionValidators()
    picked = []
    for epoch, a in acc.items():
        k = round(a * n)
        source = {"logits": torch.eye(2)[[0] * n], "labels": torch.tensor([0] * k + [1] * (n - k))}
        score = cb.rules(source, step=epoch)["val/source_1se_step"]
        cb.history.append({"epoch": epoch, "step": epoch, "val/source_acc": k / n})
        picked.append(score)
    assert max(picked) == 29  # not 6 (the best), not 30 (0.95: a real drop)
    assert picked[0] == 0 and picked[-1] == -1
