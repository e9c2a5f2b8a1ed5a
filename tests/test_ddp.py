"""Scale-out: `trainer=ddp` as a user runs it (2 CPU processes, gloo), and the SLURM launcher."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dann import schedules
from dann.data import DomainAdaptationDataModule
from tests.conftest import CONFIGS, compose_cfg, logged_scalars, run_script

ROOT = Path(__file__).resolve().parents[1]


def test_ddp_two_cpu_processes_follow_the_single_process_schedules(tmp_path, data_dir):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_epochs=1",  # a whole epoch: each process must see half of it
        "trainer.limit_val_batches=0",  # the schedules are what is checked: no evaluation
        "trainer.limit_test_batches=0",
        "trainer.log_every_n_steps=1",
        "+trainer.enable_progress_bar=false",
        "callbacks=none",
        f"hydra.run.dir={out}",
    ]
    env = {**os.environ, "DANN_DATA_DIR": str(data_dir)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "Starting with 2 processes" in log and "distributed_backend=gloo" in log
    assert log.count("SUMMARY") == 1  # printed by rank 0 only

    logged = logged_scalars(out / "tensorboard")
    lambdas = logged["train/lambda"]
    lrs = logged["train/lr"]
    progress = logged["train/progress"]
    steps = sorted(lambdas)
    # one optimiser step per logged step, 0 .. T-1: T is what each process actually ran
    total = len(steps)
    assert steps == list(range(total)) and sorted(lrs) == steps

    # each process gets half of the epoch: the single-process epoch has n // batch_size steps
    cfg = compose_cfg([], tmp_path / "cfg", data_dir)
    dm = DomainAdaptationDataModule(**OmegaConf.to_container(cfg.dataset, resolve=True))
    dm.prepare_data()
    dm.setup("fit")
    n = max(len(dm.data.source.train.inputs), len(dm.data.target.train.inputs))
    single = n // cfg.dataset.batch_size
    assert abs(total - n / (2 * cfg.dataset.batch_size)) <= 1 and total < single

    # p = step / (per-process stepping batches): the schedules at p run the same curve as one
    # process (p reaches (T-1)/T at the last step, not (T-1)/(2T))
    lr0, anneal = cfg.optimizer.optim.lr, cfg.optimizer.lr_annealing
    for step in steps:
        p = step / total
        assert progress[step] == pytest.approx(p, abs=1e-6)
        expected_lambda = schedules.grl_sigmoid(p, cfg.schedule.gamma, cfg.schedule.lambda_max)
        assert lambdas[step] == pytest.approx(expected_lambda, abs=1e-5)
        expected_lr = lr0 * schedules.lr_annealing(p, anneal.alpha, anneal.beta)
        assert lrs[step] == pytest.approx(expected_lr, rel=1e-5)
    assert lambdas[steps[-1]] > 0.99  # near the end of the sigmoid warm-up (gamma = 10)
    assert math.isfinite(logged["train/loss"][steps[-1]])


def test_ddp_trainer_config_composes(make_cfg):
    cfg = make_cfg("trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2")
    t = cfg.trainer
    assert (t.strategy, t.devices, t.num_nodes) == ("ddp", 4, 2)
    assert t._target_ == "pytorch_lightning.Trainer" and t.sync_batchnorm is False
    assert t.precision == "32-true" and t.max_epochs == make_cfg().trainer.max_epochs


# the SLURM integration (the `slurm` extra, part of `dev`) is tested without a cluster: the
# preset composes, submitit's SLURM executor accepts it and writes the sbatch script from it
# (nothing is submitted), and a sweep runs through the plugin with submitit's local executor
SLURM_OVERRIDES = [
    "hydra/launcher=slurm",
    "hydra.launcher.partition=gpu",
    "hydra.launcher.timeout_min=60",
    "hydra.launcher.gpus_per_node=4",
    "hydra.launcher.tasks_per_node=4",
    "trainer=ddp",
    "trainer.devices=4",
]


def compose_with_hydra(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


def test_slurm_launcher_config_composes():
    from hydra import compose, initialize_config_dir

    overrides = SLURM_OVERRIDES
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
        plain = compose(
            "train", overrides=["hydra/launcher=submitit_slurm"], return_hydra_config=True
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.timeout_min) == ("gpu", 60)
    assert launcher.gpus_per_node == launcher.tasks_per_node == cfg.trainer.devices == 4
    # the preset only sets defaults on top of the plugin's own submitit_slurm config
    assert plain.hydra.launcher._target_ == launcher._target_
    assert set(plain.hydra.launcher) == set(launcher)


def test_slurm_preset_becomes_the_sbatch_script_submitit_would_submit(tmp_path, monkeypatch):
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from submitit.slurm.slurm import _make_sbatch_string

    # submitit's SLURM executor wants `srun` on PATH; a stub that is never run stands in for it
    stub = tmp_path / "bin" / "srun"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 1\n")
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{stub.parent}{os.pathsep}{os.environ['PATH']}")

    cfg = compose_with_hydra([*SLURM_OVERRIDES, "hydra.launcher.cpus_per_task=6"])
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    # the parameters as the plugin's launch() hands them to submitit
    del params["_target_"], params["submitit_folder"]
    init = {"slurm_max_num_timeout": params.pop("max_num_timeout")}
    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    params = {k if k in shared else f"slurm_{k}": v for k, v in params.items()}
    executor = submitit.AutoExecutor(cluster="slurm", folder=tmp_path / "submitit", **init)
    executor.update_parameters(**params)  # an unknown key in the preset raises here
    script = _make_sbatch_string(
        command="python -u -m submitit.core._submit x",
        folder=tmp_path / "submitit",
        **executor._executor.parameters,
    )
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --time=60",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --cpus-per-task=6",
        "#SBATCH --nodes=1",
        "#SBATCH --mem=32GB",
    ):
        assert line in script, script


def test_a_sweep_runs_through_the_submitit_plugin(tmp_path, data_dir):
    """The SLURM launcher's code path with submitit's local executor: the plugin pickles the
    task, a separate process runs each job, and its run dir and summary come back."""
    sweep = tmp_path / "sweep"
    proc = run_script(
        "train.py",
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=5",
        "seed=1",
        "trainer.fast_dev_run=true",
        "callbacks=none",
        f"hydra.sweep.dir={sweep}",
        data_dir=data_dir,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "Submitit 'local' sweep output dir" in proc.stdout + proc.stderr
    (job,) = (p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert job.name == "0_callbacks=none,seed=1,trainer.fast_dev_run=True"
    assert (job / "summary.json").is_file() and (job / ".hydra" / "config.yaml").is_file()
    assert "SUMMARY" in (job / "train.log").read_text()
    job_logs = list((sweep / ".submitit").rglob("*_log.out"))  # written by the job's process
    assert job_logs and "Job completed successfully" in job_logs[0].read_text()
