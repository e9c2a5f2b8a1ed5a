"""Label-free hyper-parameter search (configs/hparams_search/, dann/search.py): a real tiny
Optuna search from the command line, its report, resuming its study, and the oracle guard."""

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import compose_config, run_script
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf, open_dict

NO_EXTRA = "the optuna extra is not installed: pip install -e '.[optuna]'"
pytest.importorskip("optuna", reason=NO_EXTRA)
pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason=NO_EXTRA)

import optuna  # noqa: E402

from dann.config_check import validate  # noqa: E402
from dann.errors import DivergenceError  # noqa: E402
from dann.search import (  # noqa: E402
    RESULT_FILE,
    SWEEPER_FILE,
    SearchReport,
    TrialDiverged,
    check_searched_keys,
    diverged_trial_fails_alone,
    searched_keys,
)

PRESETS = ["dann_optuna", "cdan_optuna"]
# a trial = 2 training steps on 100 moons points, one validation and one test batch
FAST = [
    "dataset=moons",
    "trainer=cpu",
    "trainer.precision=32-true",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "dataset.train_size=100",
    "dataset.eval_size=100",
    "callbacks.selection_validators.max_samples=50",
]


def search(sweep: Path, data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    args = ("-m", "hparams_search=dann_optuna", *FAST, *args, f"hydra.sweep.dir={sweep}")
    return run_script("train.py", *args, data_dir=data_dir, threads=1)


def compose_search(*overrides: str):
    return compose_config("train", *overrides, hydra=True)


def study(sweep: Path) -> optuna.Study:
    return optuna.load_study(study_name="dann", storage=f"sqlite:///{sweep}/optuna.db")


def same(params: dict) -> str:
    """Trial parameters as Optuna stores them ('[100]') and as a run's overrides give them."""
    return json.dumps({k: str(v).replace(" ", "") for k, v in params.items()}, sort_keys=True)


@pytest.fixture(scope="module")
def searched(tmp_path_factory, data_dir):
    """A 2-trial search; returns (process, sweep dir, result file contents)."""
    sweep = tmp_path_factory.mktemp("search") / "sweep"
    proc = search(sweep, data_dir, "hydra.sweeper.n_trials=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = OmegaConf.to_container(OmegaConf.load(sweep / RESULT_FILE))
    return proc, sweep, result


def test_search_runs_trials_on_the_label_free_objective(searched):
    _, sweep, result = searched
    assert result["n_trials"] == 2 and result["n_failed"] == 0
    # the preset's objective: information maximisation (source accuracy rewards weak adaptation)
    assert result["objective"] == "val/im" and result["direction"] == "maximize"
    assert result["label_free"] is True and result["oracle_objective"] is False
    # what Optuna recorded for each trial is that run's selected val/im, read back from
    # the run's own summary.json (not test/target_acc, which uses target labels)
    trials = study(sweep).trials
    assert len(trials) == 2 and study(sweep).direction == optuna.study.StudyDirection.MAXIMIZE
    by_params = {same(t.params): t.value for t in trials}
    for row in result["trials"]:
        summary = json.loads((sweep / row["trial"] / "summary.json").read_text())
        assert row["value"] == pytest.approx(summary["selected_val/im"])
        assert by_params[same(row["params"])] == pytest.approx(row["value"])
        # the sampled values reached the run's config, inside the preset's ranges
        run_cfg = OmegaConf.load(sweep / row["trial"] / ".hydra" / "config.yaml")
        assert run_cfg.schedule.lambda_max == row["params"]["schedule.lambda_max"]
        assert 0.1 <= run_cfg.schedule.lambda_max <= 1.0 and 2.0 <= run_cfg.schedule.gamma <= 20
        assert 1e-3 <= run_cfg.optimizer.optim.lr <= 0.1
        assert list(run_cfg.backbone.domain_head.hidden) in ([100], [500], [1024, 1024])
    best = max(result["trials"], key=lambda r: r["value"])
    assert result["best"]["trial"] == best["trial"]
    sweeper_result = OmegaConf.load(sweep / "optimization_results.yaml")
    assert sweeper_result.best_value == pytest.approx(best["value"])
    # marked by SearchReport: what best_value measures, and that it used no target labels
    assert sweeper_result.objective == "val/im" and sweeper_result.label_free is True
    assert sweeper_result.oracle_objective is False
    assert not (sweep / "optimization_results.yaml").read_text().startswith("# ORACLE")


def test_search_report_names_best_trial_overrides_and_oracle_target_acc(searched):
    proc, sweep, result = searched
    best = result["best"]
    report = [line for line in proc.stdout.splitlines() if line.startswith("SEARCH ")]
    assert any("label-free: no target labels" in line for line in report)
    assert f"SEARCH best trial {best['trial']}: val/im={best['value']:.4f}" in report
    assert f"SEARCH best overrides: {' '.join(map(shlex.quote, best['overrides']))}" in report
    assert shlex.split(result["resume"])[-1] == f"hydra.sweep.dir={sweep}"
    assert "optimizer.optim.lr=" in next(line for line in report if "best params:" in line)
    target = f"SEARCH best test/target_acc={best['oracle_test_target_acc']:.4f} (oracle,"
    assert any(line.startswith(target) for line in report)
    assert not any("ORACLE" in line for line in report)  # a label-free objective


def test_search_resumes_its_study_in_the_same_sweep_dir(searched, data_dir, tmp_path):
    _, searched_sweep, first = searched
    # a copy: the module's other tests read the 2-trial study, in whatever order they run
    sweep = tmp_path / "sweep"
    shutil.copytree(searched_sweep, sweep)
    proc = search(sweep, data_dir, "hydra.sweeper.n_trials=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(study(sweep).trials) == 3  # 2 + 1: the study continued
    result = OmegaConf.load(sweep / RESULT_FILE)
    assert result.n_trials == 3 and len({r.trial for r in result.trials}) == 3
    assert {r["trial"] for r in first["trials"]} < {r.trial for r in result.trials}


def test_oracle_objective_is_refused_without_the_flag(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    proc = search(sweep, data_dir, "selection=target_oracle", "hydra.sweeper.n_trials=1")
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = "error: the search objective selection.metric=val/target_acc uses target labels"
    assert error in proc.stderr and "hparams_search.allow_oracle_objective=true" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not sweep.exists()  # stopped before the study or any trial


def test_oracle_objective_with_the_flag_says_oracle_everywhere(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    cfg = compose_search(
        "hparams_search=dann_optuna",
        "selection=target_oracle",
        "hparams_search.allow_oracle_objective=true",
        f"hydra.sweep.dir={sweep}",
    )
    SearchReport().on_multirun_start(cfg)  # allowed
    assert sweep.is_dir()
    for name, acc in (("0", 0.6), ("1", 0.8)):  # two finished trials, as the runs leave them
        (sweep / name / ".hydra").mkdir(parents=True)
        OmegaConf.save([f"optimizer.optim.lr={acc / 10}"], sweep / name / ".hydra/overrides.yaml")
        summary = {"selected_val/target_acc": acc, "test/target_acc": acc - 0.1}
        (sweep / name / "summary.json").write_text(json.dumps(summary))
    # what the Optuna sweeper writes at its end, before the callback's on_multirun_end
    OmegaConf.save({"name": "optuna", "best_params": {}, "best_value": 0.8}, sweep / SWEEPER_FILE)
    SearchReport().on_multirun_end(cfg)
    report = [line for line in capsys.readouterr().out.splitlines() if line.startswith("SEARCH")]
    assert "ORACLE: uses target labels" in report[0] and len(report) == 8
    assert all(line.startswith("SEARCH (ORACLE objective) ") for line in report), report
    result = OmegaConf.load(sweep / RESULT_FILE)
    assert result.oracle_objective is True and result.label_free is False
    assert result.best.trial == "1" and result.best.params == {"optimizer.optim.lr": 0.08}
    sweeper_result = OmegaConf.load(sweep / SWEEPER_FILE)
    assert sweeper_result.best_value == 0.8 and sweeper_result.objective == "val/target_acc"
    assert sweeper_result.oracle_objective is True and sweeper_result.label_free is False
    for name in (RESULT_FILE, SWEEPER_FILE):  # a reader of either file sees it first
        assert (sweep / name).read_text().startswith("# ORACLE study"), name


@pytest.mark.parametrize(
    ("selection", "direction"), [("source_val", "maximize"), ("entropy", "minimize")]
)
def test_direction_follows_the_selection_mode(selection, direction, tmp_path, capsys):
    cfg = compose_search(
        "hparams_search=dann_optuna", f"selection={selection}", f"hydra.sweep.dir={tmp_path}"
    )
    assert cfg.hydra.sweeper.direction == direction
    SearchReport().on_multirun_start(cfg)
    opposite = {"maximize": "minimize", "minimize": "maximize"}[direction]
    cfg = compose_search(
        "hparams_search=dann_optuna",
        f"selection={selection}",
        f"hydra.sweeper.direction={opposite}",
        f"hydra.sweep.dir={tmp_path}",
    )
    with pytest.raises(SystemExit):
        SearchReport().on_multirun_start(cfg)
    assert "disagrees with selection.mode" in capsys.readouterr().err


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_search_real_keys_and_pass_validation(preset, tmp_path, make_cfg):
    cfg = compose_search(f"hparams_search={preset}", f"hydra.sweep.dir={tmp_path}")
    keys = searched_keys(cfg)
    assert {"schedule.lambda_max", "schedule.gamma", "optimizer.optim.lr"} <= set(keys)
    assert "backbone.domain_head.hidden" in keys
    for key in keys:  # each searched key exists in the composed run config
        assert OmegaConf.select(cfg, key, default="MISSING") != "MISSING", key
    if preset == "cdan_optuna":
        assert cfg.method._target_ == "dann.methods.CDAN"
        assert "method.entropy_conditioning" in keys
    assert cfg.hydra.sweeper.storage == f"sqlite:///{tmp_path}/optuna.db"
    validate(make_cfg(f"hparams_search={preset}"))  # the config check knows the preset's keys


def test_without_multirun_the_preset_asks_for_minus_m(capsys):
    cfg = compose_search("hparams_search=dann_optuna")
    with pytest.raises(SystemExit):
        SearchReport().on_run_start(cfg)
    assert "error: hparams_search=dann_optuna runs a search of many trials: add -m" in (
        capsys.readouterr().err
    )


def test_a_diverged_trial_fails_alone_and_other_failures_stop_the_search(capsys):
    in_search = OmegaConf.create({"hparams_search": {"allow_oracle_objective": False}})
    with pytest.raises(TrialDiverged, match="non-finite"):  # a failed trial; the search goes on
        with diverged_trial_fails_alone(in_search):
            raise DivergenceError("the training loss became non-finite")
    with pytest.raises(DivergenceError):  # a plain run: train.py reports it and exits 2
        with diverged_trial_fails_alone(OmegaConf.create({"hparams_search": None})):
            raise DivergenceError("the training loss became non-finite")
    assert compose_search("hparams_search=dann_optuna").hydra.sweeper.max_failure_rate == 1.0

    job = OmegaConf.create({"hydra": {"runtime": {"output_dir": "sweep/0"}}})
    report = SearchReport()
    report.on_job_end(job, JobReturn(status=JobStatus.COMPLETED, _return_value=0.9))
    report.on_job_end(job, JobReturn(status=JobStatus.FAILED, _return_value=TrialDiverged("x")))
    with pytest.raises(SystemExit):
        report.on_job_end(job, JobReturn(status=JobStatus.FAILED, _return_value=KeyError("bug")))
    assert "error: trial sweep/0 failed: 'bug'" in capsys.readouterr().err


def refusal(capsys, tmp_path, *overrides: str, sample: dict | None = None) -> str:
    """The error on_multirun_start stops a search with (exit status 2), before any trial."""
    sweep = tmp_path / "sweep"  # never created: each case is refused first
    cfg = compose_search("hparams_search=dann_optuna", *overrides, f"hydra.sweep.dir={sweep}")
    with open_dict(cfg):  # what hydra.sweeper.params.<key>=choice(...) would add with -m
        cfg.hydra.sweeper.params.update(sample or {})
    with pytest.raises(SystemExit) as exit_info:
        SearchReport().on_multirun_start(cfg)
    assert exit_info.value.code == 2 and not sweep.exists()
    return capsys.readouterr().err


def test_a_searched_key_missing_from_the_config_is_refused_naming_the_options(capsys, tmp_path):
    err = refusal(capsys, tmp_path, "schedule=constant")
    assert "error: the search samples schedule.lambda_max, which this config does not have" in err
    assert "schedule=constant has no lambda_max" in err
    assert "the schedule options that have it: grl_sigmoid, linear" in err
    err = refusal(capsys, tmp_path, sample={"schedule.nope": "choice(1,2)"})
    assert "the search samples schedule.nope" in err and "no such key" in err
    # a key added with + is the user's own, and the preset's keys all exist
    cfg = compose_search("hparams_search=dann_optuna", "hydra.sweep.dir=unused")
    with open_dict(cfg):
        cfg.hydra.sweeper.params["+schedule.nope"] = "choice(1,2)"
    check_searched_keys(cfg)


def test_an_experiment_presets_method_and_seed_sweeps_are_refused(capsys, tmp_path):
    err = refusal(capsys, tmp_path, "experiment=paper_amazon_reviews")
    assert "error: experiment=paper_amazon_reviews sweeps method, seed in its hydra" in err
    assert "'~hydra.sweeper.params.method' '~hydra.sweeper.params.seed'" in err
    # big_batch_... inherits its seed sweep from best_mnist_to_mnistm
    err = refusal(capsys, tmp_path, "experiment=big_batch_mnist_to_mnistm")
    assert "sweeps seed in its hydra.sweeper.params" in err
    # the fix the error names gets past that check, to the next: constant has no lambda_max
    drop = ["~hydra.sweeper.params.method", "~hydra.sweeper.params.seed"]
    err = refusal(capsys, tmp_path, "experiment=paper_amazon_reviews", *drop)
    assert "schedule=constant has no lambda_max" in err
    # seed or a config group searched in any other way
    assert "the search samples seed" in refusal(capsys, tmp_path, sample={"seed": "choice(1,2)"})
    err = refusal(capsys, tmp_path, sample={"method": "choice(dann,cdan)"})
    assert "the search samples the config group method" in err


@pytest.mark.parametrize(
    "overrides",
    [
        ["callbacks=none"],
        ["~callbacks.best_checkpoint"],
        ["selection=entropy", "callbacks.best_checkpoint.monitor=val/source_acc"],
    ],
)
def test_a_search_without_a_checkpoint_on_the_selection_metric_is_refused(
    overrides, capsys, tmp_path
):
    err = refusal(capsys, tmp_path, *overrides)
    assert "error: no ModelCheckpoint in callbacks" in err and "monitors selection.metric=" in err
    assert "Use callbacks=default" in err


@pytest.mark.parametrize("rule", ["source_val_1se", "last"])
def test_a_rule_is_refused_as_the_search_objective(rule, capsys, tmp_path):
    """A rule's logged value is a training step: the longest trial, not the best, would win."""
    err = refusal(capsys, tmp_path, f"selection={rule}")
    assert f"selection={rule}" in err and "not a score that compares trials" in err
    assert "selection=source_val, reverse_val" in err and "target_oracle" not in err
