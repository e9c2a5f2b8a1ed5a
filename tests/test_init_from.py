"""init_from=<ckpt>: a new run that starts from another run's weights (DIRT-T-style refinement,
fine-tuning): the prediction path taken exactly, the method's heads where they fit, and nothing
of the old run's optimiser or schedule; misfits and a clash with ckpt_path are clear errors."""

import pytest
import torch
from conftest import fast_dev_checkpoint

from dann.checkpoints import init_from_checkpoint, load_checkpoint
from dann.errors import CheckpointError, ConfigError
from dann.train import build, run


def _same(module, state, prefix) -> bool:
    own = {k: v for k, v in module.state_dict().items() if k.startswith(prefix)}
    return bool(own) and all(torch.equal(v, state[k]) for k, v in own.items())


def test_the_prediction_path_is_taken_and_a_new_methods_heads_stay_fresh(
    make_cfg, tmp_path, data_dir
):
    ckpt = fast_dev_checkpoint(tmp_path / "first", data_dir, "method=dann", "seed=3")
    state = load_checkpoint(ckpt)["state_dict"]
    # the same method: its discriminator fits and is taken too
    module = build(make_cfg("method=dann", "seed=5"))[1]
    assert not _same(module, state, "feature_extractor.")  # another seed: other weights
    assert init_from_checkpoint(module, ckpt) == ["feature_extractor", "classifier", "method"]
    for part in ("feature_extractor.", "classifier.", "method."):
        assert _same(module, state, part), part
    # another method with other heads (CDAN's discriminator reads the multilinear map)
    module = build(make_cfg("method=cdan", "seed=5"))[1]
    fresh = {k: v.clone() for k, v in module.state_dict().items() if k.startswith("method.")}
    assert init_from_checkpoint(module, ckpt) == ["feature_extractor", "classifier"]
    assert _same(module, state, "feature_extractor.") and _same(module, state, "classifier.")
    assert all(torch.equal(module.state_dict()[k], v) for k, v in fresh.items())


def test_a_run_from_init_from_trains_as_a_new_run(make_cfg, tmp_path, data_dir):
    ckpt = fast_dev_checkpoint(tmp_path / "first", data_dir)
    limits = ["trainer.max_steps=3", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
    summary = run(make_cfg(f"init_from={ckpt}", "method=vada", *limits))
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 3  # counted from 0: the old run's step is not carried
    assert summary["test/target_acc"] is not None


def test_misfits_and_a_clash_with_ckpt_path_are_refused(make_cfg, tmp_path, data_dir):
    ckpt = fast_dev_checkpoint(tmp_path / "first", data_dir)  # lenet_dann
    module = build(make_cfg("backbone=lenet_dann_bn"))[1]
    with pytest.raises(CheckpointError, match="do not fit this model .*use the backbone="):
        init_from_checkpoint(module, ckpt)
    with pytest.raises(ConfigError, match="give one of them"):
        run(make_cfg(f"init_from={ckpt}", f"ckpt_path={ckpt}"))
