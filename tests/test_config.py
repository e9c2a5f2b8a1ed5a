"""Every option of every config group composes and instantiates."""

import pytest
import torch
from hydra.errors import MissingConfigException

from dann.data import DomainAdaptationDataModule
from dann.module import DALightningModule
from dann.train import build
from tests.conftest import CONFIGS

# pairs whose model size is read from the user's files (dataset.source / dataset.target, or
# folder's class folders): no default files to read
SIZED_BY_USER_FILES = {"table", "sequences", "text", "folder"}
# methods for one label-set setting compose with a pair cut to it (dann/data/label_sets.py)
SETTING_OF = {
    "pada": ["dataset.target_classes=[0,1,2,3,4]"],
    "osbp": ["dataset.source_classes=[0,1,2,3,4,5]"],
    "ovanet": ["dataset.source_classes=[0,1,2,3,4,5]"],
}
GROUP_OPTIONS = [
    (group.name, option.stem)
    for group in sorted(p for p in CONFIGS.iterdir() if p.is_dir())
    for option in sorted(group.glob("*.yaml"))
]


def test_every_group_has_options():
    groups = {g for g, _ in GROUP_OPTIONS}
    assert {"dataset", "backbone", "method", "schedule", "optimizer", "trainer", "logger"} <= groups


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS, ids=lambda v: v)
def test_option_composes_and_instantiates(make_cfg, group, option):
    if group == "dataset" and option in SIZED_BY_USER_FILES:
        pytest.skip("sized from the user's files: see test_{tables,sequences,text,folder_pairs}")
    if group == "backbone" and option == "gru_tokens":
        pytest.skip("reads dataset=text representation=tokens ids: built in tests/test_text.py")
    cfg = make_cfg(f"{group}={option}", *(SETTING_OF.get(option, []) if group == "method" else []))
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        cfg.trainer.accelerator = "cpu"  # composes as written; instantiate what can run here
    if cfg.backbone.features.get("pretrained"):
        # no ImageNet weights offline: the error for that is tested in test_backbones.py
        cfg.backbone.features.pretrained = False
    datamodule, module, trainer = build(cfg)
    assert isinstance(datamodule, DomainAdaptationDataModule)
    assert isinstance(module, DALightningModule)
    assert trainer.max_epochs == cfg.trainer.max_epochs
    # the module's hyper-parameters are plain types (checkpoints load with weights_only=True)
    plain = (dict, list, str, int, float, bool, type(None))
    stack = [dict(module.hparams)]
    while stack:
        node = stack.pop()
        assert isinstance(node, plain), type(node)
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    # a forward pass through the composed network works and has the right output shape
    # (image pairs; the vector/sequence toys run end to end in test_toy.py)
    if cfg.dataset.image_size:
        size = cfg.dataset.image_size
        x = torch.zeros(2, cfg.dataset.channels, size, size)
        # the source's classes (all, unless a label set keeps fewer), + "unknown" for OSBP
        known = len(cfg.dataset.source_classes or range(cfg.dataset.num_classes))
        outputs = known + int(module.method.unknown_output)
        assert module(x).shape == (2, outputs)


def test_unknown_option_lists_choices(make_cfg):
    with pytest.raises(MissingConfigException, match="mnist_to_mnistm"):
        make_cfg("dataset=no_such_pair")


@pytest.mark.parametrize("backbone", ["lenet_dann", "dirt_t", "svhn_dann", "resnet18", "timm"])
def test_an_image_backbone_on_a_pair_without_images_names_the_fix(make_cfg, backbone):
    from dann.config_check import validate
    from dann.errors import ConfigError

    validate(make_cfg(f"backbone={backbone}"))  # the default pair: images, accepted
    with pytest.raises(ConfigError, match="reads images, and dataset=moons has none.*mlp"):
        validate(make_cfg("dataset=moons", f"backbone={backbone}"))
    validate(make_cfg("dataset=moons", "backbone=mlp"))  # the MLP reads vectors too


def test_hparams_for_tensorboard_are_flat_scalars(make_cfg):
    from dann.train import flat_hparams

    flat = flat_hparams(make_cfg("schedule.gamma=5"))
    assert flat["schedule/gamma"] == 5 and flat["seed"] == 42
    assert flat["method/_target_"] == "dann.methods.DANN"
    assert flat["backbone/classifier/hidden"] == "[100, 100]"
    assert not any(k.endswith(("data_dir", "default_root_dir")) for k in flat)
    assert all(isinstance(v, int | float | str | bool) for v in flat.values())
