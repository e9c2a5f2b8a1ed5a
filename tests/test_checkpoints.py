"""Checkpoint safety: weights_only loading of our own checkpoints, clear errors for missing,
corrupt, unsafe and mismatched ones, and atomic writes."""

import pytest
import torch
from omegaconf import OmegaConf

from dann.checkpoints import AtomicCheckpointIO, check_state_dict, load_checkpoint
from dann.errors import CheckpointError
from dann.module import DALightningModule


def module_for(make_cfg, *overrides) -> DALightningModule:
    cfg = make_cfg(*overrides)
    groups = ("backbone", "method", "schedule", "optimizer")
    kwargs = {g: OmegaConf.to_container(cfg[g], resolve=True) for g in groups}
    return DALightningModule(**kwargs, num_classes=cfg.dataset.num_classes)


def dann_checkpoint(module) -> dict:
    return {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}


def test_our_checkpoints_load_with_weights_only(make_cfg, tmp_path):
    module = module_for(make_cfg)
    path = tmp_path / "m.ckpt"
    AtomicCheckpointIO().save_checkpoint(dann_checkpoint(module), path)
    ckpt = load_checkpoint(path)
    rebuilt = DALightningModule(**ckpt["hyper_parameters"])
    check_state_dict(rebuilt, ckpt["state_dict"], str(path))
    rebuilt.load_state_dict(ckpt["state_dict"])
    for k, v in module.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[k], v), k


def test_missing_checkpoint_names_the_path_and_where_runs_write_them(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint not found: .*nope\.ckpt.*checkpoints/"):
        load_checkpoint(tmp_path / "nope.ckpt")


def test_truncated_checkpoint_is_reported_as_truncated(make_cfg, tmp_path):
    path = tmp_path / "m.ckpt"
    torch.save(dann_checkpoint(module_for(make_cfg)), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or not a PyTorch checkpoint"):
        load_checkpoint(path)


class Payload:  # anything a weights_only load must refuse to unpickle
    pass


def test_checkpoint_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "x": Payload()}, path)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(path)


def test_a_file_that_is_not_a_dann_checkpoint_says_what_is_missing(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not a dann checkpoint: it has no state_dict"):
        load_checkpoint(path)


def test_checkpoint_of_another_architecture_lists_the_mismatched_keys(make_cfg):
    lenet = module_for(make_cfg, "backbone=lenet_dann")
    with_bn = module_for(make_cfg, "backbone=lenet_dann_bn")
    with pytest.raises(CheckpointError) as err:
        check_state_dict(lenet, with_bn.state_dict(), "bn.ckpt")
    message = str(err.value)
    assert "bn.ckpt does not fit this model" in message
    assert "unexpected: " in message and "running_mean" in message
    cdan = module_for(make_cfg, "method=cdan")
    with pytest.raises(CheckpointError, match=r"shape \(checkpoint vs model\): "):
        check_state_dict(lenet, cdan.state_dict(), "cdan.ckpt")


def test_a_failure_during_save_leaves_the_previous_checkpoint_loadable(
    make_cfg, tmp_path, monkeypatch
):
    module = module_for(make_cfg)
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint(dann_checkpoint(module), path)
    before = path.read_bytes()

    def dies_halfway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # e.g. SIGINT while writing

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {}, "hyper_parameters": {}}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path)["state_dict"].keys() == module.state_dict().keys()
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary left behind
