"""End-to-end runs of dann.train.run on the embedded data (tiny budgets)."""

import pytest
import torch
from conftest import recount_accuracy, recount_tested, run_and_recount, run_keeping_model

from dann.module import DALightningModule
from dann.train import run

ACCURACIES = ("test/source_acc", "test/target_acc")


@pytest.mark.parametrize("method", ["dann", "source_only"])
def test_fast_dev_run(make_cfg, method):
    summary, recount = run_and_recount(make_cfg(f"method={method}", "trainer.fast_dev_run=true"))
    for key in ACCURACIES:  # the fraction of the tested batch the model classifies right
        assert summary[key] == pytest.approx(recount[key], abs=1e-6), key
    assert summary["checkpoint"] is None  # fast_dev_run writes no checkpoints


def test_short_run_checkpoints_and_summarises(make_cfg, tmp_path):
    cfg = make_cfg(
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
    )
    summary, datamodule, module, trainer = run_keeping_model(cfg)
    ckpt_dir = tmp_path / "run" / "checkpoints"
    assert (ckpt_dir / "last.ckpt").is_file()
    assert summary["checkpoint"].startswith(str(ckpt_dir))
    # the selected checkpoint's validation accuracies are those of its weights on the one
    # validation batch per domain, and the test accuracies those of the same weights
    recount = recount_tested(datamodule, module, trainer)  # the weights trainer.test restored
    best = torch.load(summary["checkpoint"], map_location="cpu", weights_only=True)
    module.load_state_dict(best["state_dict"])
    val = recount_accuracy(module, datamodule, "val", batches=(1, 1))
    assert best["val_metrics"]["val/source_acc"] == pytest.approx(val["source"], abs=1e-6)
    # the summary's selected metric (the default selection's) is the checkpoint's own value
    monitor = f"selected_{cfg.selection.metric}"
    assert summary[monitor] == best["val_metrics"][cfg.selection.metric]
    assert summary["selected_val/target_acc"] == pytest.approx(val["target"], abs=1e-6)
    for key in ACCURACIES:
        assert summary[key] == pytest.approx(recount[key], abs=1e-6), key
    # our checkpoints are plain data: they load with weights_only=True and rebuild the module
    saved = torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 8
    assert set(saved["val_metrics"]) >= {"val/source_acc", "val/target_acc", "val/domain_acc"}
    # the datamodule's preprocessing (pooled per-channel mean) travels with the checkpoint
    assert len(saved["DomainAdaptationDataModule"]["mean"]) == 3
    model = DALightningModule.load_from_checkpoint(ckpt_dir / "last.ckpt", weights_only=True)
    assert model.hparams.num_classes == 10


def test_source_accuracy_rises_well_above_chance(make_cfg):
    """A real-learning check on the embedded data: 300 steps of the default recipe."""
    summary = run(
        make_cfg(
            "trainer.max_steps=300",
            "trainer.max_epochs=-1",
            "trainer.check_val_every_n_epoch=100",
            "callbacks=none",
            "logger=tensorboard",
        )
    )
    assert summary["test/source_acc"] > 0.4  # chance is 0.1; ~0.59 measured at seed 42


def test_domain_accuracy_scores_logits_near_zero_correctly(make_cfg):
    from dann.train import build

    _, module, _ = build(make_cfg())
    # logit 0.3 > 0 says "target"; read as a probability (0.3 < 0.5) it would say "source"
    module.method.domain_logits = lambda f, logits=None: torch.full((len(f),), 0.3)
    x, y = torch.zeros(4, 3, 28, 28), torch.zeros(4, dtype=torch.long)
    module._eval_step("val", (x, y), dataloader_idx=1)  # a target batch
    assert module.eval_domain_acc.compute() == 1.0
