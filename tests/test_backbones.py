"""Backbones: output widths, the paper nets' layers, ResNet weight loading (never downloading)
and its learning-rate split, and the GRU's sequence features."""

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn
from torchvision import models

from dann.models import (
    GTSRBDANN,
    SVHNDANN,
    DIRTTNet,
    GRUFeatures,
    LeNetDANN,
    LeNetDANNBN,
    ResNetFeatures,
)
from dann.models.heads import label_classifier
from dann.models.resnet import hub_weights_file
from dann.train import build


@pytest.fixture
def no_download(monkeypatch):
    """Any attempt to download fails the test."""

    def fail(*args, **kwargs):
        raise AssertionError(f"tried to download {args[:1]}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """An empty torch hub dir for this test (the global setting is restored afterwards)."""
    monkeypatch.setattr(torch.hub, "_hub_dir", torch.hub._hub_dir)
    torch.hub.set_dir(str(tmp_path / "hub"))
    return tmp_path / "hub"


def conv_shapes(net: nn.Module) -> list[tuple[int, int]]:
    return [(m.out_channels, m.kernel_size[0]) for m in net.modules() if isinstance(m, nn.Conv2d)]


def pool_shapes(net: nn.Module) -> list[tuple[int, int]]:
    return [(m.kernel_size, m.stride) for m in net.modules() if isinstance(m, nn.MaxPool2d)]


@pytest.mark.parametrize(
    ("option", "overrides", "input_shape", "width"),
    [
        ("lenet_dann_bn", [], (2, 3, 28, 28), 800),
        ("dirt_t", [], (2, 3, 28, 28), 64 * 7 * 7),  # the second block's map
        ("dirt_t", ["backbone.features.shared_blocks=3"], (2, 3, 28, 28), 64),
        ("svhn_dann", ["dataset.image_size=32"], (2, 3, 32, 32), 128 * 7 * 7),
        ("gtsrb_dann", ["dataset.image_size=40"], (2, 3, 40, 40), 256 * 5 * 5),
        ("resnet18", ["backbone.features.pretrained=false"], (2, 3, 32, 32), 256),
        ("resnet50", ["backbone.features.pretrained=false"], (2, 3, 32, 32), 256),
        ("gru", ["+dataset.input_size=5"], (2, 7, 5), 64),
        ("gru", [], (2, 3, 28, 28), 64),  # an image pair: read row by row
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_config_out_features_match_forward(make_cfg, option, overrides, input_shape, width):
    cfg = make_cfg(f"backbone={option}", *overrides)
    features = instantiate(OmegaConf.to_container(cfg.backbone.features, resolve=True))
    out = features(torch.zeros(input_shape))
    assert features.out_features == width
    assert out.shape == (input_shape[0], width)


def test_gru_config_reads_sequences_or_image_rows(make_cfg):
    assert make_cfg("backbone=gru", "+dataset.input_size=5").backbone.features.input_size == 5
    assert make_cfg("backbone=gru").backbone.features.input_size == 28  # default pair's width


@pytest.mark.parametrize(
    ("net", "padding", "size", "width"),
    [
        (SVHNDANN, "same", 32, 128 * 7 * 7),
        (SVHNDANN, "same", 28, 128 * 6 * 6),
        (SVHNDANN, "valid", 32, 128 * 1 * 1),
        (GTSRBDANN, "same", 40, 256 * 5 * 5),
        (GTSRBDANN, "same", 28, 256 * 3 * 3),
        (GTSRBDANN, "valid", 40, 256 * 2 * 2),
    ],
)
def test_paper_net_widths(net, padding, size, width):
    model = net(3, size, padding)
    assert model.out_features == width
    assert model(torch.zeros(2, 3, size, size)).shape == (2, width)


def test_paper_net_layers():
    svhn, gtsrb = SVHNDANN(3, 32), GTSRBDANN(3, 40)
    assert conv_shapes(svhn) == [(64, 5), (64, 5), (128, 5)]
    assert pool_shapes(svhn) == [(3, 2), (3, 2)]
    assert conv_shapes(gtsrb) == [(96, 5), (144, 3), (256, 5)]
    assert pool_shapes(gtsrb) == [(2, 2), (2, 2), (2, 2)]
    # ReLU right after every conv
    for model in (svhn, gtsrb):
        layers = list(model.net)
        assert all(
            isinstance(layers[i + 1], nn.ReLU)
            for i, m in enumerate(layers)
            if isinstance(m, nn.Conv2d)
        )


def test_lenet_bn_layers_and_size_inference_keeps_batchnorm_statistics():
    model = LeNetDANNBN(3, 28)
    assert conv_shapes(model) == [(64, 5), (50, 5)]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 2
    assert any(isinstance(m, nn.Dropout2d) for m in model.modules())
    # inferring out_features ran a zero image through the net without touching BN statistics
    assert model.training
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        assert int(bn.num_batches_tracked) == 0
        assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))


@pytest.mark.parametrize("net", [LeNetDANN, LeNetDANNBN])
def test_input_norm_instance_ignores_each_images_brightness_and_contrast(net):
    torch.manual_seed(0)
    images = torch.rand(4, 3, 28, 28)
    # every image and channel gets its own contrast (scale) and brightness (shift)
    changed = images * torch.rand(4, 3, 1, 1).add(0.5) + torch.randn(4, 3, 1, 1)
    instance, plain = net(3, 28, input_norm="instance").eval(), net(3, 28).eval()
    assert torch.allclose(instance(images), instance(changed), atol=1e-3)
    assert not torch.allclose(plain(images), plain(changed), atol=1e-2)
    with pytest.raises(ValueError, match="instance"):
        net(3, 28, input_norm="layer")


def test_dirt_t_net_layers_and_training_noise():
    torch.manual_seed(0)
    model = DIRTTNet(3, 32, width=192, shared_blocks=3)  # the reference's large.py
    assert conv_shapes(model) == [(192, 3)] * 9
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 9
    assert pool_shapes(model) == [(2, 2), (2, 2)]
    assert isinstance(model.net[0], nn.InstanceNorm2d)
    assert model.out_features == 192
    images = torch.rand(2, 3, 32, 32)
    model.eval()  # no dropout, no noise: the same image gives the same features
    assert torch.equal(model(images), model(images))
    model.train()
    assert not torch.allclose(model(images), model(images))
    quiet = DIRTTNet(3, 32, dropout=0.0, noise=0.0).train()
    assert torch.equal(quiet(images), quiet(images))
    with pytest.raises(ValueError, match="shared_blocks"):
        DIRTTNet(3, 32, shared_blocks=1)


def test_dirt_t_split_moves_the_third_block_to_the_label_path():
    """shared_blocks=2 (the reference's --trim 5): the features are the second block's map and
    the label classifier runs the third block; with the same weights, image -> logits is the
    same function as with every block shared."""
    head = {"hidden": [], "dropout": 0.0, "batch_norm": False}
    torch.manual_seed(0)
    shared_all = DIRTTNet(3, 28, shared_blocks=3)
    classifier_all = label_classifier(shared_all, head, 10)
    split = DIRTTNet(3, 28, shared_blocks=2)
    classifier_split = label_classifier(split, head, 10)
    assert split.out_features == 64 * 7 * 7
    assert conv_shapes(split) == [(64, 3)] * 6 and conv_shapes(classifier_split) == [(64, 3)] * 3
    assert conv_shapes(classifier_all) == []
    # the same parameters, in the same order, only split differently between the two parts
    for source, target in zip(
        [*shared_all.parameters(), *classifier_all.parameters()],
        [*split.parameters(), *classifier_split.parameters()],
        strict=True,
    ):
        target.data.copy_(source.data)
    for model in (shared_all, classifier_all, split, classifier_split):
        model.eval()
    images = torch.rand(3, 3, 28, 28)
    logits = classifier_all(shared_all(images))
    assert torch.allclose(classifier_split(split(images)), logits, atol=1e-5)
    # the split's features: the second block's map (the same layers of the all-shared net)
    second_block = shared_all.net[: len(split.net) - 1]
    assert torch.allclose(split(images), second_block(images).flatten(1), atol=1e-6)


def test_paper_net_errors_name_the_fix():
    with pytest.raises(ValueError, match="dataset.image_size"):
        SVHNDANN(3, 28, padding="valid")  # the Caffe arithmetic needs 32x32
    with pytest.raises(ValueError, match="same"):
        GTSRBDANN(3, 40, padding="full")


def test_resnet_random_init_has_no_pretrained_parameters():
    model = ResNetFeatures("resnet18", pretrained=False)
    assert model.pretrained_parameters() == []  # nothing loaded: everything trains at lr
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 256)
    assert isinstance(model.trunk.fc, nn.Identity)
    assert [type(m) for m in model.bottleneck] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout]


def test_resnet_loads_a_state_dict_file_and_fine_tunes_only_the_trunk_slowly(make_cfg, tmp_path):
    reference = models.resnet18(weights=None)  # a full torchvision state dict, fc included
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    cfg = make_cfg("backbone=resnet18", f"backbone.features.pretrained={path}", "optimizer=adam")
    _, module, _ = build(cfg)
    fe = module.feature_extractor
    assert torch.equal(fe.trunk.conv1.weight, reference.conv1.weight)
    assert torch.equal(fe.trunk.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)

    slow, fast = module.configure_optimizers().param_groups
    lr = cfg.optimizer.optim.lr
    assert slow["lr"] == pytest.approx(0.1 * lr) and fast["lr"] == pytest.approx(lr)
    assert {id(p) for p in slow["params"]} == {id(p) for p in fe.trunk.parameters()}
    fast_ids = {id(p) for p in fast["params"]}
    assert {id(p) for p in fe.bottleneck.parameters()} <= fast_ids
    assert {id(p) for p in module.classifier.parameters()} <= fast_ids
    assert len(slow["params"]) + len(fast["params"]) == len(list(module.parameters()))


def test_resnet_state_dict_that_does_not_fit_names_the_keys(tmp_path):
    state = models.resnet18(weights=None).state_dict()
    state["extra.weight"] = state.pop("layer1.0.conv1.weight")
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"layer1\.0\.conv1\.weight.*extra\.weight"):
        ResNetFeatures("resnet18", pretrained=str(path))
    with pytest.raises(FileNotFoundError, match="state dict"):
        ResNetFeatures("resnet18", pretrained=str(tmp_path / "absent.pth"))


def test_resnet_pretrained_true_without_cached_weights_fails_before_downloading(
    hub_dir, no_download
):
    with pytest.raises(FileNotFoundError) as err:
        ResNetFeatures("resnet18", pretrained=True)
    message = str(err.value)
    assert str(hub_dir / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "backbone.features.pretrained=false" in message


def test_resnet_pretrained_true_reads_the_hub_cache(hub_dir, no_download):
    reference = models.resnet18(weights=None)
    cached = hub_weights_file("resnet18")
    assert cached.parent == hub_dir / "checkpoints"
    cached.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cached)
    model = ResNetFeatures("resnet18", pretrained=True)
    assert torch.equal(model.trunk.conv1.weight, reference.conv1.weight)
    assert len(model.pretrained_parameters()) == len(list(model.trunk.parameters()))


def test_resnet_rejects_bad_arguments():
    with pytest.raises(ValueError, match="dataset.channels=3"):
        ResNetFeatures("resnet18", pretrained=False, in_channels=1)
    with pytest.raises(ValueError, match="resnet50"):
        ResNetFeatures("vgg16", pretrained=False)


def test_gru_features_are_the_final_hidden_state_of_the_whole_sequence():
    torch.manual_seed(0)
    model = GRUFeatures(input_size=4, hidden_size=8, num_layers=2)
    x = torch.randn(3, 6, 4)
    features = model(x)
    assert features.shape == (3, 8) and model.out_features == 8
    outputs, _ = model.gru(x)
    torch.testing.assert_close(features, outputs[:, -1])  # the last layer, last step
    changed = x.clone()
    changed[:, 0] += 1.0  # only the first time step
    assert not torch.allclose(model(changed), features)


def test_gru_bidirectional_concatenates_both_directions():
    torch.manual_seed(0)
    model = GRUFeatures(input_size=4, hidden_size=8, bidirectional=True)
    x = torch.randn(3, 6, 4)
    features = model(x)
    assert features.shape == (3, 16) and model.out_features == 16
    outputs, _ = model.gru(x)
    torch.testing.assert_close(features[:, :8], outputs[:, -1, :8])  # forward, after the end
    torch.testing.assert_close(features[:, 8:], outputs[:, 0, 8:])  # backward, after the start


def test_gru_reads_other_shapes_as_steps_of_input_size():
    torch.manual_seed(0)
    model = GRUFeatures(input_size=4, hidden_size=8)
    images = torch.randn(2, 1, 3, 4)  # 3 rows of width 4
    torch.testing.assert_close(model(images), model(images.reshape(2, 3, 4)))
    with pytest.raises(ValueError, match="input_size"):
        model(torch.randn(2, 1, 3, 5))
