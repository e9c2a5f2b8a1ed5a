"""The leaner training step keeps its meaning: which rows the label classifier sees, the
schedule as a plain function, batches already on the device left alone, the progress bar paced
by time. No timings are asserted (scripts/bench_overhead.py measures them)."""

import functools

import pytest
import pytorch_lightning as pl
import torch

from dann.callbacks import ProgressBar
from dann.data.datamodule import DomainAdaptationDataModule
from dann.schedules import grl_sigmoid
from dann.train import build


def _classifier_rows(make_cfg, *overrides) -> list[int]:
    """Rows the label classifier gets in one training step."""
    datamodule, module, trainer = build(
        make_cfg(*overrides, "trainer.fast_dev_run=true", "callbacks=none")
    )
    rows: list[int] = []
    hook = module.classifier.register_forward_hook(lambda m, i, o: rows.append(len(i[0])))
    trainer.fit(module, datamodule=datamodule)
    hook.remove()
    return rows[:1]  # fast_dev_run validates afterwards; the first call is the training step


@pytest.mark.parametrize(
    ("overrides", "rows"),
    [
        ((), 2),  # DANN reads features only: the source rows' logits suffice
        (("loss.target_entropy=0.1",), 4),  # the entropy term needs the target logits
        (("loss.mcc=1",), 4),  # so does MCC
        (("loss.bsp=1e-4",), 2),  # BSP reads features only
        (("method=cdan",), 4),  # CDAN conditions on the target predictions
        (("method=daan",), 4),  # DAAN weights the local discriminators by them
        (("backbone=lenet_dann_bn", "backbone.classifier.batch_norm=true"), 4),  # BN statistics
    ],
)
def test_target_rows_are_classified_only_when_something_needs_them(make_cfg, overrides, rows):
    batch = 2
    seen = _classifier_rows(make_cfg, *overrides, f"dataset.batch_size={batch}")
    assert seen == [rows]


def test_dann_label_loss_is_the_same_with_or_without_the_target_rows(make_cfg):
    _, module, _ = build(make_cfg())
    module.eval()  # no dropout; lenet_dann has no BatchNorm
    x = torch.randn(6, 3, 28, 28)
    features = module.features(x)
    assert not module._classifies_target_rows
    torch.testing.assert_close(module.classifier(features[:3]), module.classifier(features)[:3])


def test_lambda_schedule_is_a_plain_partial_of_the_configured_function(make_cfg):
    _, module, _ = build(make_cfg("schedule.gamma=5.0"))
    schedule = module.lambda_schedule
    assert type(schedule) is functools.partial and schedule.func is grl_sigmoid
    for p in (0.0, 0.3, 1.0):
        assert schedule(p) == pytest.approx(grl_sigmoid(p, gamma=5.0))


def test_training_batches_on_the_device_are_returned_as_they_are():
    dm = DomainAdaptationDataModule.__new__(DomainAdaptationDataModule)
    x, y, t = torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long), torch.zeros(2, 1, 4, 4)
    batch = {"source": (x, y), "target": t}
    assert dm.transfer_batch_to_device(batch, torch.device("cpu"), 0) is batch
    moved = dm.transfer_batch_to_device(batch, torch.device("meta"), 0)
    assert moved is not batch and moved["target"].device.type == "meta"
    assert moved["source"][0].device.type == "meta"


def test_progress_bar_redraws_at_most_once_per_interval_and_at_the_end(monkeypatch):
    clock = iter([0.0, 0.05, 0.1, 0.25, 0.3, 0.31])
    monkeypatch.setattr("dann.callbacks.progress.time.monotonic", lambda: next(clock))
    bar = ProgressBar(interval=0.2)
    drawn = [bar._should_update(n, 6) for n in range(1, 7)]
    # t=0 first draw; 0.05, 0.1 too soon; 0.25 draws; 0.3 too soon; the last batch always
    assert drawn == [True, False, False, True, False, True]
    bar.disable()
    assert not bar._should_update(6, 6)


def test_the_module_reads_no_private_lightning_attribute():
    """Lightning's private attributes (`trainer._logger_connector`, `fit_loop._should_accumulate`,
    `LightningModule._trainer`) change between releases without notice: the module uses its
    public API only."""
    import ast
    import inspect

    import dann.module

    lightning_own = set(dir(pl.LightningModule)) | set(vars(pl.LightningModule()))
    found = set()
    for node in ast.walk(ast.parse(inspect.getsource(dann.module))):
        if isinstance(node, ast.Attribute):
            owner, name = ast.unparse(node.value), node.attr
        elif (  # getattr(x, "_name"), hasattr(...)
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) in ("getattr", "hasattr", "setattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
        ):
            owner, name = ast.unparse(node.args[0]), str(node.args[1].value)
        else:
            continue
        if not name.startswith("_") or name.startswith("__"):
            continue
        if owner == "self" and name not in lightning_own:
            continue  # the module's own
        if owner.split(".")[0] in ("nn", "torch"):
            continue  # torch's (nn.modules.batchnorm._BatchNorm)
        found.add(f"{owner}.{name}")
    assert not found, sorted(found)


class LightningProbe(pl.Callback):
    """Logs a value through Lightning's own step logging (self.log, on_step) after every batch:
    the steps Lightning writes it at are the steps its rule picks."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        pl_module.log("probe", float(batch_idx), on_step=True, on_epoch=False, batch_size=1)


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer.limit_train_batches=7", "trainer.log_every_n_steps=3"],
        ["trainer.limit_train_batches=7", "trainer.log_every_n_steps=2", "trainer.max_steps=5"],
        [
            "trainer.limit_train_batches=12",
            "trainer.log_every_n_steps=2",
            "trainer.accumulate_grad_batches=2",
        ],
    ],
    ids=["every-3", "stopped-by-max-steps", "accumulating"],
)
def test_step_scalars_are_written_at_the_steps_lightning_writes_its_own(make_cfg, overrides):
    """The module hands its step scalars to the loggers itself (public API), at the steps it
    computes Lightning would write them: pinned against Lightning's own writes."""
    from conftest import logged_scalars

    from dann.train import run

    summary = run(
        make_cfg(
            "callbacks=none",
            "+callbacks.probe._target_=test_lean_step.LightningProbe",
            "trainer.max_epochs=2",
            "trainer.limit_val_batches=0",
            "trainer.limit_test_batches=1",
            *overrides,
        )
    )
    written = logged_scalars(summary["log_dir"])
    assert len(written["probe"]) >= 2
    for tag in ("train/loss", "train/lr", "train/lambda", "train/progress"):
        assert sorted(written[tag]) == sorted(written["probe"]), tag
    assert set(written["probe"]) <= set(written["epoch"])  # with the epoch, as Lightning's


def test_step_scalars_are_written_once_per_logging_step_under_gradient_accumulation(make_cfg):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from dann.train import run

    summary = run(
        make_cfg(
            "callbacks=none",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=12",
            "trainer.limit_val_batches=0",
            "trainer.limit_test_batches=1",
            "trainer.accumulate_grad_batches=2",
            "trainer.log_every_n_steps=2",
        )
    )
    events = EventAccumulator(summary["log_dir"], size_guidance={"scalars": 0})
    events.Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps and len(steps) == len(set(steps)), steps  # each logging step once


def test_without_a_terminal_each_epoch_is_one_log_line_and_no_bar(make_cfg, caplog, capsys):
    datamodule, module, trainer = build(
        make_cfg(
            "callbacks=none",
            "trainer.max_epochs=2",
            "trainer.limit_train_batches=3",
            "trainer.limit_val_batches=1",
        )
    )
    (bar,) = [c for c in trainer.callbacks if isinstance(c, ProgressBar)]
    bar.plain = True  # as under SLURM or `> log.txt`
    with caplog.at_level("INFO", logger="dann.callbacks.progress"):
        trainer.fit(module, datamodule=datamodule)
    lines = [r.getMessage() for r in caplog.records if r.name == "dann.callbacks.progress"]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    assert all("3 steps" in line and "val/target_acc=" in line for line in lines)
    assert "\r" not in capsys.readouterr().err  # no carriage-return bar updates


def test_training_accuracies_count_every_step_of_the_epoch(make_cfg):
    """The predictions reach torchmetrics in batches of steps (ACCURACY_BATCHES), the
    last ones at the epoch's end: the epoch's accuracies are those of all its steps."""
    from dann.step_logging import ACCURACY_BATCHES

    steps, batch = ACCURACY_BATCHES + 7, 8
    datamodule, module, trainer = build(
        make_cfg(
            "callbacks=none",
            "trainer.max_epochs=1",
            f"trainer.limit_train_batches={steps}",
            "trainer.limit_val_batches=0",
            f"dataset.batch_size={batch}",
        )
    )
    classes, is_target = [], []
    module.classifier.register_forward_hook(lambda m, i, o: classes.append(o.argmax(1)))
    disc = module.method.discriminator
    disc.register_forward_hook(lambda m, i, o: is_target.append(o[:, 0] > 0))
    labels = []

    class Labels(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            labels.append(batch["source"][1])

    trainer.callbacks.append(Labels())
    trainer.fit(module, datamodule=datamodule)
    assert len(classes) == len(labels) == len(is_target) == steps
    expected_source = (torch.cat(classes) == torch.cat(labels)).float().mean()
    domains = torch.cat([torch.zeros(batch), torch.ones(batch)]).bool()
    expected_domain = torch.stack([t == domains for t in is_target]).float().mean()
    metrics = trainer.callback_metrics
    assert metrics["train/source_acc"].item() == pytest.approx(expected_source.item())
    assert metrics["train/domain_acc"].item() == pytest.approx(expected_domain.item())
    assert not module._train_accuracy.pending  # nothing left over for the next epoch


@pytest.mark.parametrize(
    ("overrides", "automatic"),
    [
        ((), False),
        (("trainer.gradient_clip_val=1.0",), True),
        (("trainer.accumulate_grad_batches=2",), True),
    ],
)
def test_the_module_steps_the_optimiser_unless_lightning_must(make_cfg, overrides, automatic):
    _, module, trainer = build(make_cfg(*overrides))
    assert module.automatic_optimization  # no trainer attached: Lightning's default
    module.trainer = trainer
    assert module.automatic_optimization is automatic


def test_lightnings_accumulation_scheduler_gets_lightnings_loop(make_cfg):
    from pytorch_lightning.callbacks import GradientAccumulationScheduler

    _, module, trainer = build(make_cfg())
    trainer.callbacks.append(GradientAccumulationScheduler({0: 2}))
    module.trainer = trainer
    assert module.automatic_optimization


# gradient clipping at a norm no gradient reaches: Lightning's automatic loop runs the step and
# the gradients are multiplied by exactly 1
LIGHTNINGS_LOOP = "trainer.gradient_clip_val=1e9"


def _steps_counted_by(run_dir) -> dict[str, int]:
    """Optimiser steps each of Lightning's loops counted in the run's last checkpoint."""
    from dann.checkpoints import step_progress

    loops = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["loops"]
    progress = step_progress(loops["fit_loop"])
    return {
        "lightning": progress["automatic"]["total"]["completed"],
        "own": progress["manual"]["total"]["completed"],
    }


def _same_runs(a, b) -> None:
    from conftest import logged_scalars
    from test_reliability import final_weights, same

    weights_a, weights_b = final_weights(a), final_weights(b)
    assert weights_a.keys() == weights_b.keys()
    for k in weights_a:
        assert same(weights_a[k], weights_b[k]), k
    logged_a, logged_b = logged_scalars(a / "tensorboard"), logged_scalars(b / "tensorboard")
    for tag in ("train/loss", "train/lr", "train/lambda", "train/source_acc", "val/target_acc"):
        assert logged_a[tag] == logged_b[tag], tag  # at every step


@pytest.mark.parametrize(
    "extra",
    [[], ["optimizer=adam"], ["trainer.precision=bf16-mixed", "method=cdan"]],
    ids=["sgd-annealed", "adam", "bf16-cdan"],
)
def test_the_modules_own_step_gives_the_results_of_lightnings_loop(tmp_path, data_dir, extra):
    from conftest import compose_cfg
    from test_reliability import SHORT

    from dann.train import run

    run(compose_cfg([*SHORT, *extra], tmp_path / "own", data_dir))
    run(compose_cfg([*SHORT, *extra, LIGHTNINGS_LOOP], tmp_path / "lightning", data_dir))
    # each run stepped in the loop it was meant to (12 steps: 2 epochs of 6 batches)
    assert _steps_counted_by(tmp_path / "own") == {"lightning": 0, "own": 12}
    assert _steps_counted_by(tmp_path / "lightning") == {"lightning": 12, "own": 0}
    _same_runs(tmp_path / "own", tmp_path / "lightning")


@pytest.mark.parametrize(
    ("before", "after"),
    [([], [LIGHTNINGS_LOOP]), ([LIGHTNINGS_LOOP], [])],
    ids=["own-then-lightning", "lightning-then-own"],
)
def test_a_run_resumed_under_the_other_optimisation_loop_continues_its_steps(
    tmp_path, data_dir, before, after
):
    """A checkpoint counts its steps in the loop that ran them; resumed under the other one
    (another clipping setting, or a checkpoint of an older dann) the count carries over."""
    from conftest import compose_cfg
    from pytorch_lightning.utilities.exceptions import SIGTERMException
    from test_reliability import SHORT

    from dann.train import run

    run(compose_cfg(SHORT, tmp_path / "straight", data_dir))
    killed = tmp_path / "killed"
    kill = ["+callbacks.kill._target_=test_reliability.SigtermAt", "+callbacks.kill.step=8"]
    with pytest.raises(SIGTERMException):
        run(compose_cfg([*SHORT, *before, *kill], killed, data_dir))
    resumed = run(compose_cfg([*SHORT, *after, "ckpt_path=last"], killed, data_dir))
    assert torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 12
    assert resumed["test/target_acc"] is not None
    _same_runs(tmp_path / "straight", killed)
