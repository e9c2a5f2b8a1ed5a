"""Label-free hyper-parameter search: the Hydra callback that guards and reports a search.

A preset in configs/hparams_search/ (Hydra's Optuna sweeper) registers `SearchReport`. Each
trial is one `python train.py` job whose objective is what train.py returns: the run's
selection metric at the checkpoint it picked (`selected_<selection.metric>` of summary.json),
which uses no target labels unless `selection=target_oracle`.

- In each trial (train.py): a diverged run raises `TrialDiverged`, which Optuna records as a
  failed trial while the search goes on; any other failed trial stops the search.
- Before any trial: an objective that uses target labels is refused unless
  `hparams_search.allow_oracle_objective=true`; the sweeper's direction must agree with
  `selection.mode`; every searched key must exist in the composed config (`schedule=constant`
  has no `schedule.lambda_max`), and neither `seed` nor a config group (`method`, `dataset`, ...)
  may be searched: the experiment presets' `hydra.sweeper.params` (method x seed) would merge into
  the search's, so `experiment=<preset>` with its sweeps is refused, naming the `~` overrides that
  drop them; a ModelCheckpoint must monitor `selection.metric` (else no trial has a value); the
  sweep dir is created (the SQLite study lives there). A refusal is `error: <message>` and exit
  status 2, as for any `DannError` of train.py.
- After the last trial: every trial under the sweep dir (this launch's and, for a resumed study,
  the earlier ones') is read from its summary.json and .hydra/overrides.yaml; the best by the
  objective is printed with its overrides and its test target accuracy (oracle, reporting only),
  and the whole table is written to <sweep dir>/search_result.yaml. The sweeper's own
  optimization_results.yaml gets the objective and whether it is label-free; with an oracle
  objective both files start with an ORACLE comment.
"""

import contextlib
import json
import math
import os
import shlex
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dann.config_check import CONFIGS, callback_configs
from dann.errors import EXIT_USER_ERROR, ConfigError, DivergenceError
from dann.selection import NOT_SELECTABLE, RULES, VALIDATORS

# optuna 2.x (what hydra-optuna-sweeper needs) predates SQLAlchemy 2 and warns once per process
# that it uses the 1.x API; the pins in pyproject.toml are the answer, the warning is noise
os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")

RESULT_FILE = "search_result.yaml"
DIRECTIONS = {"max": "maximize", "min": "minimize"}
ORACLE_NOTE = "oracle, reporting only: uses target labels, never used to choose"
SWEEPER_FILE = "optimization_results.yaml"  # what the Optuna sweeper writes at its end
_ABSENT = object()


class TrialDiverged(RuntimeError):
    """A trial whose training diverged: Optuna records it as failed and the search goes on."""


@contextlib.contextmanager
def diverged_trial_fails_alone(cfg: DictConfig):
    """Around one run of train.py: in a search, a DivergenceError (too high a learning rate or
    lambda, a region the sampler is meant to explore) fails that trial only; elsewhere, and for
    every other error, nothing changes (`reported_as_exit` stops the command)."""
    try:
        yield
    except DivergenceError as e:
        if cfg.get("hparams_search") is None:
            raise
        raise TrialDiverged(str(e)) from None


def uses_target_labels(cfg: DictConfig) -> bool:
    """Whether the objective (the selection metric) is computed with target labels."""
    metric = cfg.selection.metric
    choice = OmegaConf.select(cfg, "hydra.runtime.choices.selection", default=None)
    return "target_acc" in metric or choice == "target_oracle"


def report_prefix(cfg: DictConfig) -> str:
    """What every line a search prints starts with."""
    return "SEARCH (ORACLE objective)" if uses_target_labels(cfg) else "SEARCH"


def describe_objective(cfg: DictConfig) -> str:
    direction = DIRECTIONS[cfg.selection.mode]
    if uses_target_labels(cfg):
        return f"{cfg.selection.metric} ({direction}; ORACLE: uses target labels, not label-free)"
    return f"{cfg.selection.metric} ({direction}; label-free: no target labels)"


def searched_overrides(cfg: DictConfig) -> list[Override]:
    """What the sweeper samples: its `params` and any sweep given on the command line."""
    params = cfg.hydra.sweeper.get("params") or {}
    overrides = [f"{k}={v}" for k, v in params.items()]
    overrides += list(cfg.hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [o for o in parsed if o.is_sweep_override()]


def searched_keys(cfg: DictConfig) -> list[str]:
    """The config keys the sweeper samples."""
    return sorted({o.key_or_group for o in searched_overrides(cfg)})


def _options_with(group: str, subkey: str) -> list[str]:
    """The options of config group `group` whose file sets `subkey`."""
    found = []
    for path in sorted((CONFIGS / group).glob("*.yaml")):
        node = OmegaConf.load(path)
        if "@package _global_" in path.read_text():
            node = OmegaConf.select(node, group, default=None) or OmegaConf.create()
        if OmegaConf.select(node, subkey, default=_ABSENT) is not _ABSENT:
            found.append(path.stem)
    return found


def _preset_sweeps(name: str) -> set[str]:
    """The keys experiment preset `name` (and the presets it builds on) sweeps."""
    path = CONFIGS / "experiment" / f"{name}.yaml"
    if not path.is_file():
        return set()
    node = OmegaConf.load(path)
    keys = set(OmegaConf.select(node, "hydra.sweeper.params", default=None) or {})
    for entry in node.get("defaults") or []:
        if isinstance(entry, str) and entry != "_self_":
            keys |= _preset_sweeps(entry)
    return keys


def check_searched_keys(cfg: DictConfig) -> None:
    """Refuse a searched key the trials cannot use: `seed`, a config group, a missing key."""
    choices = OmegaConf.select(cfg, "hydra.runtime.choices", default=None) or {}
    experiment = choices.get("experiment")
    from_preset = _preset_sweeps(experiment) if experiment else set()
    for override in searched_overrides(cfg):
        key = override.key_or_group
        if key in from_preset:
            drops = " ".join(f"'~hydra.sweeper.params.{k}'" for k in sorted(from_preset))
            fixes = " ".join(f"{k}=<value>" for k in sorted(from_preset))
            raise ConfigError(
                f"experiment={experiment} sweeps {', '.join(sorted(from_preset))} in its "
                "hydra.sweeper.params, which merge into the search's: the search would sample "
                f"{key}. Drop them and fix each instead: add {drops} ({fixes})"
            )
        if key == "seed":
            raise ConfigError(
                "the search samples seed: picking the luckiest seed is not a hyper-parameter "
                "choice. Fix it (seed=<n>) and repeat the best trial over seeds afterwards"
            )
        if key in choices:
            raise ConfigError(
                f"the search samples the config group {key}: its options have different keys "
                f"(and the study is named after the method). Run one search per option "
                f"({key}=<option>)"
            )
        added = override.is_add() or override.is_force_add()  # +key: a key of the user's own
        if added or OmegaConf.select(cfg, key, default=_ABSENT) is not _ABSENT:
            continue
        group, _, subkey = key.partition(".")
        has = _options_with(group, subkey) if subkey and (CONFIGS / group).is_dir() else []
        where = (
            f"{group}={choices.get(group)} has no {subkey}; the {group} options that have it: "
            f"{', '.join(has)}. Pick one ({group}=...)"
            if has
            else "no such key in the composed config. Fix the key"
        )
        raise ConfigError(
            f"the search samples {key}, which this config does not have: {where}, or search "
            f"another key (a preset of your own in configs/hparams_search/)"
        )


def check_objective_is_a_score(cfg: DictConfig) -> None:
    """A rule (source_val_1se, last) picks an epoch within a run; its logged value is a training
    step, which says nothing about how one trial compares with another."""
    rules = {VALIDATORS[name][0]: name for name in RULES}
    metric = cfg.selection.metric
    if metric in rules:
        scores = [
            n for n, (m, _) in VALIDATORS.items() if n not in RULES and m not in NOT_SELECTABLE
        ]
        raise ConfigError(
            f"selection={rules[metric]} ({metric}) is a rule that picks an epoch within a run, "
            "not a score that compares trials: a search needs a score as its objective. Use one "
            f"of selection={', '.join(s for s in scores if s != 'target_oracle')}"
        )


def check_selected_checkpoint(cfg: DictConfig) -> None:
    """A trial's value is the checkpoint a ModelCheckpoint monitoring selection.metric picks."""
    from pytorch_lightning.callbacks import ModelCheckpoint  # Lightning: only for a search

    metric = cfg.selection.metric
    checkpoints = callback_configs(cfg.get("callbacks"), ModelCheckpoint)
    if any(node.get("monitor") == metric for node in checkpoints):
        return
    choice = OmegaConf.select(cfg, "hydra.runtime.choices.callbacks", default=None)
    raise ConfigError(
        f"no ModelCheckpoint in callbacks (callbacks={choice}) monitors selection.metric={metric}: "
        f"a trial's value is selected_{metric}, the metric at the checkpoint it picks, so every "
        "trial would fail without a value. Use callbacks=default (its best_checkpoint monitors "
        "selection.metric) and keep callbacks.best_checkpoint (monitor: ${selection.metric})"
    )


def read_trials(sweep_dir: Path, metric: str, keys: list[str]) -> list[dict[str, Any]]:
    """One row per job dir under `sweep_dir` (oldest first); `value` is None for a failed one."""
    rows, parser = [], OverridesParser.create()
    job_dirs = sorted(
        (p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")),
        key=lambda d: (d / ".hydra").stat().st_mtime,
    )
    for job in job_dirs:
        overrides = [str(o) for o in OmegaConf.load(job / ".hydra" / "overrides.yaml")]
        values = {o.key_or_group: o.value() for o in parser.parse_overrides(overrides)}
        summary_file = job / "summary.json"
        summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
        value = summary.get(f"selected_{metric}")
        finite = isinstance(value, int | float) and math.isfinite(value)
        rows.append(
            {
                "trial": str(job.relative_to(sweep_dir)),
                "value": float(value) if finite else None,
                "params": {k: values[k] for k in keys if k in values},
                "overrides": overrides,
                "oracle_test_target_acc": summary.get("test/target_acc"),
                "test_source_acc": summary.get("test/source_acc"),
                "checkpoint": summary.get("checkpoint"),
            }
        )
    return rows


def best_trial(rows: list[dict[str, Any]], mode: str) -> dict[str, Any] | None:
    done = [r for r in rows if r["value"] is not None]
    if not done:
        return None
    pick = max if mode == "max" else min
    return pick(done, key=lambda r: r["value"])  # the earliest of equal values


def resume_command(cfg: DictConfig, sweep_dir: Path) -> str:
    skip = ("hydra.sweep.dir=", "hydra.mode=")  # the latter is what -m adds
    hydra_overrides = [o for o in cfg.hydra.overrides.hydra if not str(o).startswith(skip)]
    args = [*cfg.hydra.overrides.task, *hydra_overrides, f"hydra.sweep.dir={sweep_dir}"]
    return "python train.py -m " + " ".join(shlex.quote(str(a)) for a in args)


def save_marked(data: dict[str, Any], path: Path, cfg: DictConfig) -> None:
    """Write `data` as YAML; with an oracle objective the file starts with an ORACLE comment."""
    text = OmegaConf.to_yaml(OmegaConf.create(data))
    if uses_target_labels(cfg):
        text = f"# ORACLE study, an upper bound: objective {describe_objective(cfg)}\n{text}"
    path.write_text(text)


def refuse(error: ConfigError) -> NoReturn:
    """Stop the command as `reported_as_exit` does: `error: <message>` on stderr, exit status 2.
    A SystemExit, because Hydra turns any Exception raised in a callback into a warning."""
    print(f"error: {error}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USER_ERROR)


class SearchReport(Callback):
    """Refuses an oracle objective unless asked for; reports the best trial at the end."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        choice = OmegaConf.select(config, "hydra.runtime.choices.hparams_search", default="")
        refuse(
            ConfigError(
                f"hparams_search={choice} runs a search of many trials: add -m "
                f"(python train.py -m hparams_search={choice} ...)"
            )
        )

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        metric, mode = config.selection.metric, config.selection.mode
        flag = "hparams_search.allow_oracle_objective"
        if uses_target_labels(config) and not OmegaConf.select(config, flag, default=False):
            refuse(
                ConfigError(
                    f"the search objective selection.metric={metric} uses target labels: a search "
                    "on it is an oracle study, not label-free hyper-parameter selection. Pick a "
                    "label-free selection (selection=source_val, reverse_val, dev or entropy), or "
                    f"set {flag}=true to run it as an oracle study (its reports then say ORACLE)"
                )
            )
        direction = OmegaConf.select(config, "hydra.sweeper.direction", default=None)
        direction = getattr(direction, "name", direction)  # the sweeper's enum, or a string
        if mode not in DIRECTIONS or direction not in (None, DIRECTIONS[mode]):
            refuse(
                ConfigError(
                    f"hydra.sweeper.direction={direction} disagrees with selection.mode={mode} "
                    f"({metric}): leave hydra.sweeper.direction at its default, which follows "
                    "selection.mode (max -> maximize, min -> minimize)"
                )
            )
        try:
            check_objective_is_a_score(config)
            check_searched_keys(config)
            check_selected_checkpoint(config)
        except ConfigError as e:
            refuse(e)
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)  # the SQLite study file is created here
        start = f"objective {describe_objective(config)} | sweep dir {sweep_dir}"
        print(f"{report_prefix(config)} {start}", flush=True)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """A trial that failed for another reason than divergence stops the search: the same
        bug or bad setting would fail every later trial too."""
        error = job_return._return_value  # what `return_value` would raise
        if job_return.status != JobStatus.FAILED or isinstance(error, TrialDiverged):
            return
        traceback.print_exception(error, file=sys.stderr)
        print(f"error: trial {config.hydra.runtime.output_dir} failed: {error}", file=sys.stderr)
        raise SystemExit(1)  # not an Exception, which Hydra would turn into a warning

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        metric, mode = config.selection.metric, config.selection.mode
        sweep_dir = Path(config.hydra.sweep.dir)
        oracle = uses_target_labels(config)
        keys = searched_keys(config)
        rows = read_trials(sweep_dir, metric, keys)
        best = best_trial(rows, mode)
        resume = resume_command(config, sweep_dir)
        result = {
            "objective": metric,
            "direction": DIRECTIONS[mode],
            "label_free": not oracle,
            "oracle_objective": oracle,
            "note": f"oracle_test_target_acc is {ORACLE_NOTE}",
            "n_trials": len(rows),
            "n_failed": sum(r["value"] is None for r in rows),
            "searched": keys,
            "best": best,
            "trials": rows,
            "resume": resume,
        }
        save_marked(result, sweep_dir / RESULT_FILE, config)
        sweeper_file = sweep_dir / SWEEPER_FILE
        if sweeper_file.is_file():  # the sweeper's best_value says nothing of what it measures
            sweeper_result = OmegaConf.to_container(OmegaConf.load(sweeper_file))
            marks = {k: result[k] for k in ("objective", "direction", "label_free")}
            marked = {**marks, "oracle_objective": oracle, **sweeper_result}
            save_marked(marked, sweeper_file, config)
        lines = [
            f"{len(rows)} trials ({result['n_failed']} failed), objective "
            f"{describe_objective(config)}"
        ]
        if best is None:
            lines.append("no trial finished with a value")
        else:
            target_acc = best["oracle_test_target_acc"]
            target_acc = f"{target_acc:.4f}" if isinstance(target_acc, float) else target_acc
            params = " ".join(f"{k}={v}" for k, v in best["params"].items())
            lines += [
                f"best trial {best['trial']}: {metric}={best['value']:.4f}",
                f"best params: {params}",
                f"best overrides: {' '.join(shlex.quote(o) for o in best['overrides'])}",
                f"best test/target_acc={target_acc} ({ORACLE_NOTE})",
            ]
        lines += [f"result: {sweep_dir / RESULT_FILE}", f"resume: {resume}"]
        print("\n".join(f"{report_prefix(config)} {line}" for line in lines), flush=True)
