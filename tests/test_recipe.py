"""The recipe options of the accuracy work: the weight EMA (and that testing uses the average),
per-domain input normalisation, shift augmentation, label smoothing and target entropy, heads
with BatchNorm, the softmax domain head, the warm-start schedule, the presets."""

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from dann.callbacks.averaging import ema_update
from dann.data.datamodule import _fixed_scale, random_shift
from dann.errors import ConfigError
from dann.losses import minimum_class_confusion
from dann.methods import DANN
from dann.models.heads import mlp_head
from dann.schedules import grl_sigmoid, warm_start
from dann.train import build, run

SHORT = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "~callbacks.proxy_a_distance",
    "~callbacks.feature_tsne",
    "~callbacks.selection_validators",  # not what these tests check: select on source_acc
    "selection=source_val",
    "+trainer.enable_progress_bar=false",
]


def test_ema_decay_warms_up_then_holds():
    avg, cur = [torch.zeros(3)], [torch.ones(3)]
    ema_update(avg, cur, torch.tensor(1), decay=0.99)  # n=1: decay (1+1)/(10+1)
    torch.testing.assert_close(avg[0], torch.full((3,), 1 - 2 / 11))
    avg = [torch.zeros(3)]
    ema_update(avg, cur, torch.tensor(10_000), decay=0.99)
    torch.testing.assert_close(avg[0], torch.full((3,), 0.01))
    counts = [torch.tensor([3])]
    ema_update(counts, [torch.tensor([7])], torch.tensor(5), decay=0.9)
    assert counts[0].item() == 7  # integer buffers are copied


class WeightsAtTest(pl.Callback):
    seen: dict = {}

    def on_test_start(self, trainer, pl_module) -> None:
        WeightsAtTest.seen = {k: v.clone() for k, v in pl_module.state_dict().items()}


def test_ema_checkpoints_and_tests_the_average(make_cfg):
    summary = run(
        make_cfg(
            *SHORT, "optimizer.ema_decay=0.5", "+callbacks.w._target_=test_recipe.WeightsAtTest"
        )
    )
    ckpt = torch.load(summary["checkpoint"], weights_only=True)
    averaged, raw = ckpt["state_dict"], ckpt["current_model_state"]
    key = "classifier.0.weight"
    assert not torch.equal(averaged[key], raw[key])  # two different sets of weights
    # trainer.test after fit evaluates the averaged weights the checkpoint was selected on
    torch.testing.assert_close(WeightsAtTest.seen[key], averaged[key])


def test_per_domain_normalisation_standardises_each_domain(make_cfg):
    datamodule, _, _ = build(make_cfg("dataset.normalize=per_domain"))
    datamodule.setup("fit")
    for index, domain in enumerate(("source", "target")):
        images = getattr(datamodule.data, domain).train.inputs[:500]
        x = datamodule.on_after_batch_transfer((images, torch.zeros(len(images))), index)[0]
        mean, std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))
        assert mean.abs().max() < 0.1 and (std - 1).abs().max() < 0.1, domain
    state = datamodule.state_dict()
    assert set(state["scale"]) == {"source", "target"}  # saved with the checkpoint


def test_fixed_normalisation_values_and_their_errors(make_cfg):
    datamodule, _, _ = build(make_cfg())
    values = {"source": {"mean": [0.5], "std": [0.5]}, "target": {"mean": [0], "std": [1]}}
    datamodule.scale = _fixed_scale(values)
    white = torch.full((1, 1, 2, 2), 255, dtype=torch.uint8)
    assert datamodule.normalize(white, "source").eq(1.0).all()
    assert datamodule.normalize(white, "target").eq(1.0).all()
    assert datamodule.normalize(white * 0, "source").eq(-1.0).all()
    with pytest.raises(ConfigError, match="std must be > 0"):
        _fixed_scale({"source": {"mean": [0], "std": [0]}, "target": {"mean": [0], "std": [1]}})
    with pytest.raises(ConfigError, match="pooled_mean or per_domain"):
        build(make_cfg("dataset.normalize=zscore"))


def test_random_shift_moves_each_image_by_at_most_the_bound():
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 9, 9)
    x[:, :, 4, 4] = 1.0  # one bright pixel in the centre
    out = random_shift(x, 2)
    assert out.shape == x.shape
    rows, cols = (out[:, 0] == 1).nonzero()[:, 1:].T
    assert len(rows) == 64  # every pixel kept (the border is replicated, nothing wraps)
    assert (rows - 4).abs().max() <= 2 and (cols - 4).abs().max() <= 2
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 10  # shifts differ


def test_training_batches_are_augmented_evaluation_batches_are_not(make_cfg):
    datamodule, _, _ = build(make_cfg("dataset.augment_shift=2"))
    datamodule.setup("fit")
    x = datamodule.data.source.train.inputs[:16]
    y = torch.zeros(16, dtype=torch.long)
    torch.manual_seed(0)
    train = datamodule.on_after_batch_transfer({"source": (x, y), "target": x}, 0)
    evaluated = datamodule.on_after_batch_transfer((x, y), 0)[0]
    assert not torch.equal(train["source"][0], evaluated)
    assert torch.equal(evaluated, datamodule.normalize(x, "source"))


def test_loss_options_reach_the_logged_losses(make_cfg):
    """At every step, the logged label loss is F.cross_entropy(label_smoothing=0.1) of the
    source rows' logits, the entropy term 0.3 times the mean entropy of the target rows'
    predictions, MCC and BSP their weights times the terms (tests/test_losses.py pins them),
    recomputed here from the logits and features the network produced in that step."""
    from conftest import logged_scalars

    datamodule, module, trainer = build(
        make_cfg(
            *SHORT,
            "loss.target_entropy=0.3",
            "loss.label_smoothing=0.1",
            "loss.mcc=0.5",
            "loss.bsp=0.01",
            "trainer.log_every_n_steps=1",
            "optimizer=adam",  # logits sharpen within steps: smoothing changes the loss more
        )
    )
    steps = []  # per training step: [source labels, logits of the source + target rows]
    training_step = module.training_step

    def keep_labels(batch, batch_idx):
        steps.append([batch["source"][1].clone(), None, None])
        return training_step(batch, batch_idx)

    def keep(index):
        def hook(layer, _, out):
            if layer.training:
                steps[-1][index] = out.detach().clone()

        return hook

    module.training_step = keep_labels
    module.classifier.register_forward_hook(keep(1))
    module.feature_extractor.register_forward_hook(keep(2))
    trainer.fit(module, datamodule=datamodule)
    logged = logged_scalars(trainer.logger.log_dir)
    assert len(steps) == 8 and sorted(logged["train/label_loss"]) == list(range(8))
    smoothed, plain, entropy, mcc, bsp = [], [], [], [], []
    for labels, logits, features in steps:
        n = len(labels)
        mcc.append(0.5 * float(minimum_class_confusion(logits[n:], 2.5)))
        bsp.append(0.01 * float(sum(torch.linalg.svdvals(f)[0] ** 2 for f in features.split(n))))
        source, target = logits[: len(labels)], logits[len(labels) :]
        assert len(target) == len(labels)
        smoothed.append(float(F.cross_entropy(source, labels, label_smoothing=0.1)))
        plain.append(float(F.cross_entropy(source, labels)))
        p = target.softmax(dim=1)
        entropy.append(0.3 * float(-(p * p.log()).sum(dim=1).mean()))
    label_loss = [logged["train/label_loss"][step] for step in range(8)]
    assert label_loss == pytest.approx(smoothed, abs=1e-6)
    # and not the unsmoothed loss: that differs by far more than the tolerance once the
    # predictions sharpen (near-uniform logits at the first step make the two almost equal)
    assert max(abs(a - b) for a, b in zip(label_loss, plain, strict=True)) > 5e-4
    target_entropy = [logged["train/target_entropy"][step] for step in range(8)]
    assert target_entropy == pytest.approx(entropy, abs=1e-6)
    assert [logged["train/mcc"][step] for step in range(8)] == pytest.approx(mcc, abs=1e-6)
    assert [logged["train/bsp"][step] for step in range(8)] == pytest.approx(bsp, rel=1e-5)


def test_heads_with_batchnorm_and_per_layer_dropout():
    head = mlp_head(8, [6, 4], 3, dropout=[0.5, 0.0], batch_norm=True)
    kinds = [type(m).__name__ for m in head]
    assert kinds == [
        "Linear",
        "BatchNorm1d",
        "ReLU",
        "Dropout",
        "Linear",
        "BatchNorm1d",
        "ReLU",
        "Linear",
    ]
    with pytest.raises(ConfigError, match="one rate per hidden layer"):
        mlp_head(8, [6, 4], 3, dropout=[0.5])


def test_softmax_domain_head_is_the_bce_of_the_log_odds():
    torch.manual_seed(0)
    method = DANN(5, 3, hidden=[4], loss="softmax", weight=2.0)
    features = torch.randn(6, 5)
    out = method(features, None, num_source=3, lambda_=1.0)
    two = method.discriminator(features)
    expected = 2.0 * nn.functional.cross_entropy(two, torch.tensor([0, 0, 0, 1, 1, 1]))
    torch.testing.assert_close(out.losses["domain_loss"], expected)
    torch.testing.assert_close(out.domain_logits, two[:, 1] - two[:, 0])
    with pytest.raises(ConfigError, match="bce, softmax"):
        DANN(5, 3, loss="hinge")


def test_warm_start_schedule():
    assert warm_start(0.0, lo=0.2, hi=1.0) == pytest.approx(0.2)
    assert warm_start(1.0, alpha=50.0, lo=0.2, hi=1.0) == pytest.approx(1.0)
    for p in (0.1, 0.5, 0.9):  # lo = 0 is the paper's sigmoid
        assert warm_start(p, alpha=10.0) == pytest.approx(grl_sigmoid(p, gamma=10.0))


@pytest.mark.parametrize("preset", ["best_mnist_to_mnistm", "fungtion_mnist_to_mnistm"])
def test_presets_build_the_recipes_they_name(make_cfg, preset):
    datamodule, module, _ = build(make_cfg(f"experiment={preset}"))
    assert module.norm["mode"] == "separate"
    assert any(
        isinstance(m, nn.BatchNorm1d) or "DomainBatchNorm" in type(m).__name__
        for m in module.classifier
    )
    if preset.startswith("fungtion"):
        assert module.method.loss == "softmax" and module.method.weight == 2.0
        assert datamodule.hparams.batch_size == 128
        assert datamodule.scale["target"][0].flatten().tolist() == [0.5, 0.5, 0.5]


def _without_the_im_settings(cfg: dict) -> dict:
    """The config less the two settings best_im_mnist_to_mnistm adds (norm, input_norm)."""
    cfg.pop("norm"), cfg["backbone"]["features"].pop("input_norm")
    return cfg


@pytest.mark.parametrize(
    "base, preset, epochs",
    [
        ("best_mnist_to_mnistm", "best_im_mnist_to_mnistm", 200),
        ("dirt_t_mnist_to_mnistm", "dirt_t_im_mnist_to_mnistm", 30),
    ],
)
def test_im_presets_are_their_base_with_the_im_settings(make_cfg, base, preset, epochs):
    """best_im_mnist_to_mnistm = best_mnist_to_mnistm + AdaBN statistics + instance-normalised
    input + 200 epochs, nothing else (docs/results.md); its DIRT-T stage
    dirt_t_im_mnist_to_mnistm = dirt_t_mnist_to_mnistm + the same two settings (30 epochs)."""
    old = OmegaConf.to_container(make_cfg(f"experiment={base}"), resolve=True)
    new = OmegaConf.to_container(make_cfg(f"experiment={preset}"), resolve=True)
    adabn = OmegaConf.to_container(make_cfg("norm=adabn").norm)
    assert old["norm"] != adabn and new["norm"] == adabn
    assert old["backbone"]["features"]["input_norm"] == "none"
    assert new["backbone"]["features"]["input_norm"] == "instance"
    assert old["trainer"]["max_epochs"] == 30 and new["trainer"]["max_epochs"] == epochs
    new["trainer"]["max_epochs"] = 30
    assert _without_the_im_settings(new) == _without_the_im_settings(old)
    _, module, _ = build(make_cfg(f"experiment={preset}"))
    assert isinstance(module.feature_extractor.net[0], nn.InstanceNorm2d)
    assert module.norm["eval_stats"] == "adabn"
