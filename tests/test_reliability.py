"""Reliability: same-seed determinism, kill-and-resume equivalence, and the checks that run
before a run starts (run-dir reuse, ckpt_path). The NaN guard is in test_bad_inputs.py."""

import os
import signal

import pytest
import pytorch_lightning as pl
import torch
from conftest import fast_dev_checkpoint, logged_scalars
from pytorch_lightning.utilities.exceptions import SIGTERMException

from dann.errors import ConfigError
from dann.train import run

SHORT = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=6",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=1",
    "trainer.log_every_n_steps=1",
    "dataset.batch_size=32",
    "dataset.eval_batch_size=128",
    "~callbacks.proxy_a_distance",
    "~callbacks.feature_tsne",
    "+trainer.enable_progress_bar=false",
]


class SigtermAt(pl.Callback):
    """Sends this process SIGTERM (what SLURM sends before a kill) after training step `step`."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def final_weights(run_dir) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    return ckpt["state_dict"]


def same(a, b) -> bool:
    """Exact equality of tensors, or of dicts (a module's extra state) holding them."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


def test_same_seed_gives_identical_logged_metrics(tmp_path, data_dir):
    from conftest import compose_cfg

    runs = [compose_cfg([*SHORT, "seed=5"], tmp_path / name, data_dir) for name in ("a", "b")]
    summaries = [run(cfg) for cfg in runs]
    assert summaries[0]["test/target_acc"] == summaries[1]["test/target_acc"]
    a, b = (logged_scalars(tmp_path / name / "tensorboard") for name in ("a", "b"))
    assert "train/loss" in a and "val/target_acc" in a
    assert a == b
    assert same(final_weights(tmp_path / "a"), final_weights(tmp_path / "b"))
    run(compose_cfg([*SHORT, "seed=6"], tmp_path / "c", data_dir))
    assert logged_scalars(tmp_path / "c" / "tensorboard")["train/loss"] != a["train/loss"]
    weights, other = final_weights(tmp_path / "a"), final_weights(tmp_path / "c")
    assert all(not torch.equal(weights[k], other[k]) for k in weights if k.endswith("weight"))


# a network with randomness in its forward pass (Dropout2d, dropout in the label head) and
# per-domain BatchNorm, so a broken RNG or BatchNorm-state restore changes the result
BN_DROPOUT = [
    "backbone=lenet_dann_bn",
    "backbone.classifier.batch_norm=true",
    "backbone.domain_head.norm=batch",
    "norm=separate",
    "norm.eval_stats=per_domain",
    "optimizer=adam",
]


# methods with no training state of their own resume through the same path as DANN: their cases
# run with `pytest -m slow` (those with state of their own, RNG draws or extras run by default)
SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "extra",
    [
        ["method=dann"],
        ["method=daan"],
        pytest.param(["method=dan"], marks=SLOW),
        pytest.param(["method=jan"], marks=SLOW),
        pytest.param(["method=coral"], marks=SLOW),
        pytest.param(["method=mdd"], marks=SLOW),
        pytest.param(["method=afn"], marks=SLOW),
        pytest.param(["method=mcc"], marks=SLOW),
        pytest.param(["method=bsp"], marks=SLOW),
        ["method=vada"],  # VAT draws random directions: the RNG state must resume too
        # class weights re-estimated each epoch from sums that cross the kill at step 8
        ["method=pada", "dataset.target_classes=[0,1,2,3,4]"],
        # the teacher is module state, refreshed every 5 steps: across the kill at step 8 too
        ["method=dirt_t", "init_from={stage_one}", "loss.teacher_interval=5"],
        ["method=cdan", *BN_DROPOUT, "optimizer.sam_rho=0.05"],
        ["method=dann", *BN_DROPOUT, "optimizer.ema_decay=0.9"],
        # the shifts are drawn when the batch reaches the device, before the callbacks'
        # on_train_batch_start (where the RNG states are restored): keyed on the position
        ["method=dann", "dataset.augment_shift=2", *BN_DROPOUT],
    ],
    ids=[
        "dann",
        "daan",
        "dan",
        "jan",
        "coral",
        "mdd",
        "afn",
        "mcc",
        "bsp",
        "vada",
        "pada",
        "dirt_t",
        "cdan-bn-dropout-sam",
        "dann-bn-dropout-ema",
        "dann-augment-shift",
    ],
)
def test_run_killed_mid_epoch_resumes_to_the_same_result(tmp_path, data_dir, extra):
    from conftest import compose_cfg

    stage_one = ""
    if any("{stage_one}" in e for e in extra):  # a refinement: from a first run's checkpoint
        stage_one = fast_dev_checkpoint(tmp_path / "stage_one", data_dir)
    overrides = [*SHORT, *(e.format(stage_one=stage_one) for e in extra)]
    straight = run(compose_cfg(overrides, tmp_path / "straight", data_dir))

    killed_dir = tmp_path / "killed"
    kill = ["+callbacks.kill._target_=test_reliability.SigtermAt", "+callbacks.kill.step=8"]
    with pytest.raises(SIGTERMException):  # step 8 = batch 2 of epoch 2 (6 per epoch)
        run(compose_cfg([*overrides, *kill], killed_dir, data_dir))
    assert (killed_dir / "checkpoints" / "interrupted.ckpt").is_file()
    resumed = run(compose_cfg([*overrides, "ckpt_path=last"], killed_dir, data_dir))

    assert resumed["test/target_acc"] == straight["test/target_acc"]
    assert resumed["test/source_acc"] == straight["test/source_acc"]
    a, b = final_weights(tmp_path / "straight"), final_weights(killed_dir)
    assert a.keys() == b.keys()
    for k in a:
        assert same(a[k], b[k]), k
    logged_a, logged_b = (
        logged_scalars(tmp_path / "straight" / "tensorboard"),
        logged_scalars(killed_dir / "tensorboard"),
    )
    for tag in ("train/loss", "train/lambda", "train/lr", "val/target_acc", "train/source_acc"):
        assert logged_b[tag] == logged_a[tag], tag  # every step, the resumed ones included


def test_a_fresh_run_refuses_a_run_dir_holding_checkpoints(make_cfg, tmp_path):
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "last.ckpt").write_bytes(b"an earlier run's")
    with pytest.raises(ConfigError, match="already holds a run .*resume it with ckpt_path=last"):
        run(make_cfg(*SHORT))
    assert (ckpts / "last.ckpt").read_bytes() == b"an earlier run's"


def test_ckpt_path_last_without_a_checkpoint_says_how_to_resume(make_cfg):
    with pytest.raises(ConfigError, match="ckpt_path=last: no checkpoint in .*hydra.run.dir"):
        run(make_cfg(*SHORT, "ckpt_path=last"))
