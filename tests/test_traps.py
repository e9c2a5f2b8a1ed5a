"""Traps a newcomer hit following the README (issue 14), one test each: the gap closure's
metric, resuming with changed settings, a selection metric nobody logs, oracle selection, and
`callbacks=none` writing a checkpoint after all."""

import csv
import json
import logging
import subprocess
from pathlib import Path

import pytest
from conftest import run_and_recount, run_script

from dann.checkpoints import changed_settings, resume_changes
from dann.config_check import validate
from dann.errors import ConfigError
from dann.train import run

QUICK = [
    "dataset=moons",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "+trainer.enable_progress_bar=false",
]
NO_ANALYSIS = ["~callbacks.proxy_a_distance", "~callbacks.feature_tsne"]


def messages(caplog, level=logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= level]


# a. compare.py: the gap closure is an oracle number on the target test accuracy


def _job(sweep: Path, name: str, method: str, source: float, target: float) -> None:
    (sweep / name / ".hydra").mkdir(parents=True)
    (sweep / name / ".hydra" / "overrides.yaml").write_text(f"- method={method}\n")
    summary = {"selected_val/source_acc": source, "test/target_acc": target}
    (sweep / name / "summary.json").write_text(json.dumps(summary))


def _compare(sweep: Path, *args: str) -> subprocess.CompletedProcess:
    return run_script("scripts/compare.py", str(sweep), *args)


def test_compare_gap_closure_defaults_to_target_test_accuracy_marked_oracle(tmp_path):
    # on the source metric (the first default column) DANN would "close" (0.95-0.9)/(0.8-0.9)
    _job(tmp_path, "0", "source_only", source=0.90, target=0.50)
    _job(tmp_path, "1", "dann", source=0.95, target=0.70)
    _job(tmp_path, "2", "target_oracle", source=0.80, target=0.90)
    proc = _compare(tmp_path)  # default metrics: selected_val/source_acc first
    assert proc.returncode == 0, proc.stderr
    header = proc.stdout.splitlines()[0]
    assert header.endswith("| gap closure (test/target_acc, oracle) |")
    dann_row = next(line for line in proc.stdout.splitlines() if "method=dann" in line)
    assert dann_row.endswith("| 0.50 |")  # (0.7 - 0.5) / (0.9 - 0.5)
    with open(tmp_path / "comparison.csv") as f:
        assert next(csv.reader(f))[-1] == "gap closure (test/target_acc, oracle)"


def test_compare_refuses_a_gap_closure_on_a_source_metric(tmp_path):
    _job(tmp_path, "0", "dann", source=0.95, target=0.70)
    proc = _compare(tmp_path, "--gap-metric", "selected_val/source_acc")
    assert proc.returncode == 2
    assert "not a target accuracy" in proc.stderr and "--gap-metric test/target_acc" in proc.stderr
    assert not (tmp_path / "comparison.csv").exists()


# b. resuming with other settings says what changed


def test_resume_with_changed_settings_warns_with_each_difference(make_cfg, caplog):
    first = make_cfg(*QUICK, *NO_ANALYSIS)
    run(first)
    assert not any("differ" in m for m in messages(caplog))
    caplog.clear()
    changed = [
        "schedule.gamma=5",
        "optimizer.optim.lr=0.05",
        "seed=7",
        "trainer.max_epochs=2",  # allowed: a longer run
        "dataset.eval_batch_size=100",  # allowed: evaluation only
    ]
    summary = run(make_cfg(*QUICK, *NO_ANALYSIS, *changed, "ckpt_path=last"))
    assert summary["test/target_acc"] is not None  # warned, not refused
    warnings = [m for m in messages(caplog) if "settings that differ" in m]
    assert len(warnings) == 1, messages(caplog)
    w = warnings[0]
    lr = first.optimizer.optim.lr
    for change in (
        f"schedule.gamma: {first.schedule.gamma} -> 5",
        f"lr: {lr} -> 0.05",
        "seed: 42 -> 7",
    ):
        assert change in w
    for allowed in ("max_epochs", "eval_batch_size", "ckpt_path", "paths."):
        assert allowed not in w


def test_resume_with_the_same_settings_and_a_longer_run_does_not_warn(make_cfg, caplog):
    run(make_cfg(*QUICK, *NO_ANALYSIS))
    caplog.clear()
    run(make_cfg(*QUICK, *NO_ANALYSIS, "trainer.max_epochs=2", "ckpt_path=last"))
    assert not any("differ" in m for m in messages(caplog)), messages(caplog)


def test_checkpoint_without_run_config_is_compared_on_the_model_hparams():
    old = {"hyper_parameters": {"schedule": {"gamma": 10.0}, "num_classes": 2}}
    new_hparams = {"schedule": {"gamma": 5.0}, "num_classes": 2}
    assert changed_settings(old, {"seed": 1}, new_hparams) == ["schedule.gamma: 10.0 -> 5.0"]


def test_resume_with_another_optimizer_class_is_refused():
    ckpt = {"run_config": {"optimizer": {"optim": {"_target_": "torch.optim.SGD", "lr": 0.01}}}}
    config = {"optimizer": {"optim": {"_target_": "torch.optim.Adam", "lr": 0.001}}}
    with pytest.raises(ConfigError, match=r"SGD -> torch.optim.Adam: its optimizer state"):
        resume_changes(ckpt, config, {}, "last.ckpt")
    config["optimizer"]["optim"]["_target_"] = "torch.optim.SGD"  # only lr: warned, not refused
    assert resume_changes(ckpt, config, {}, "last.ckpt") == ["optimizer.optim.lr: 0.01 -> 0.001"]


# c. a selection metric whose callback is removed is refused before training


@pytest.mark.parametrize(
    "overrides",
    [
        ["selection=dev", "~callbacks.selection_validators"],
        [
            "selection=reverse_val",
            "callbacks=none",
            "+callbacks.stop._target_=pytorch_lightning.callbacks.EarlyStopping",
            "+callbacks.stop.monitor=val/reverse_acc",
        ],
    ],
    ids=["dev-without-validators", "early-stopping-on-reverse_val-callbacks-none"],
)
def test_selection_metric_nobody_logs_is_refused_up_front(make_cfg, overrides):
    with pytest.raises(ConfigError, match=r"selection_validators callback.*selection=source_val"):
        validate(make_cfg(*QUICK, *overrides))


def test_callbacks_none_runs_with_any_selection(make_cfg):
    """No callback monitors the selection metric (no checkpoint: the run tests its final
    weights), so nothing needs the validators that log it."""
    validate(make_cfg(*QUICK, "selection=reverse_val", "callbacks=none"))
    validate(make_cfg(*QUICK, "callbacks=none"))  # the default, source_val_1se


def test_selection_metrics_with_their_logger_pass(make_cfg):
    validate(make_cfg(*QUICK, "selection=dev"))  # the default callbacks log val/dev_risk
    validate(make_cfg(*QUICK, "callbacks=none"))  # val/source_acc: the model logs it


# d. oracle selection is loud


def test_target_oracle_selection_warns_and_summary_says_oracle(make_cfg, caplog):
    validate(make_cfg(*QUICK))
    assert not any("TARGET LABELS" in m for m in messages(caplog))
    with caplog.at_level(logging.INFO):
        run(make_cfg(*QUICK, *NO_ANALYSIS, "selection=target_oracle"))
    warnings = [m for m in messages(caplog) if "TARGET LABELS" in m]
    assert len(warnings) == 1 and "oracle" in warnings[0]
    summary = next(m for m in messages(caplog, logging.INFO) if m.startswith("SUMMARY"))
    assert "best val/target_acc=" in summary and "ORACLE selection" in summary


# e. callbacks=none writes no checkpoint, and the run tests the final weights


def test_callbacks_none_writes_no_checkpoint_and_tests_the_final_weights(make_cfg, tmp_path):
    summary, recount = run_and_recount(
        make_cfg(*QUICK, "callbacks=none", "trainer.check_val_every_n_epoch=1")
    )
    assert list(tmp_path.rglob("*.ckpt")) == []
    assert summary["checkpoint"] is None
    # the accuracies the final weights (those the run left in the module) score
    for key in ("test/source_acc", "test/target_acc"):  # what the tested weights score
        assert summary[key] == pytest.approx(recount[key], abs=1e-6), key
