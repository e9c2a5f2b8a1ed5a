"""Config validation, before any data is read or model built: a typo fails in a second.

- Unknown keys: Hydra refuses `key=value` for a key that does not exist, but `+key=value`
  adds any key silently. Every node that names a `_target_` may hold only that target's
  arguments; every other node only the keys some config file of its group declares. An
  unknown key is an error naming the closest valid one.
- Ranges: batch sizes, learning rate, lambda, the schedules' gamma, ... out of range is an
  error naming the field and the allowed range.
- `selection.metric` must be one of the validators' metrics, and the callback that logs it
  must be configured (`selection=dev` with `~callbacks.selection_validators` is refused here,
  not after the first epoch). Selecting on `val/target_acc` (`selection=target_oracle`) is
  allowed, with a WARNING: it picks the checkpoint with target labels.

Unknown config-group options (`dataset=nope`) are Hydra's to refuse: it lists the choices.
`check_command_line` runs before Hydra composes: `trainer.max_epoch=3` (a key that does not
exist, which Hydra would advise adding with `+`) names the closest existing key instead.

Importing this module loads neither torch nor Lightning, and the key and range checks run
without them (a node's `_target_` is imported only to check a key no config file gives it):
train.py validates before the heavy imports, so a typo fails in about a second.
"""

import difflib
import functools
import inspect
import logging
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import yaml
from hydra.utils import get_class, get_object
from omegaconf import DictConfig, OmegaConf

from dann.errors import ConfigError
from dann.signatures import source_arguments

log = logging.getLogger(__name__)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# selection metrics the LightningModule logs itself; every other validator's metric is logged
# by the SelectionValidators callback (`callbacks.selection_validators`)
LOGGED_BY_MODULE = {"val/source_acc", "val/target_acc"}
ORACLE_METRIC = "val/target_acc"
HYDRA_KEYS = {"_target_", "_partial_", "_convert_", "_recursive_", "_args_"}
FREE_FORM = {"callbacks", "logger"}  # children user-named (logger=many); checked by _target_
TOP_LEVEL_FILES = ("train.yaml", "evaluate.yaml")

# field -> (test of an allowed value, what is allowed); checked where the field exists
RANGES = {
    "seed": (lambda v: 0 <= v <= 2**32 - 1, "an integer in [0, 2^32 - 1]"),
    "dataset.batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "dataset.eval_batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "dataset.num_classes": (lambda v: v >= 2, "an integer >= 2"),
    "dataset.num_workers": (lambda v: v >= 0, "an integer >= 0"),
    "dataset.image_size": (lambda v: v >= 1, "an integer >= 1"),
    "optimizer.optim.lr": (lambda v: v > 0, "a number > 0"),
    "optimizer.optim.weight_decay": (lambda v: v >= 0, "a number >= 0"),
    "optimizer.optim.momentum": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "optimizer.lr_annealing.alpha": (lambda v: v >= 0, "a number >= 0"),
    "optimizer.lr_annealing.beta": (lambda v: v >= 0, "a number >= 0"),
    "schedule.lambda_max": (lambda v: v >= 0, "a number >= 0 (lambda scales a reversed gradient)"),
    "schedule.value": (lambda v: v >= 0, "a number >= 0 (lambda scales a reversed gradient)"),
    "schedule.gamma": (lambda v: v > 0, "a number > 0 (the sigmoid's steepness in p)"),
    "schedule.ramp_until": (lambda v: 0 <= v <= 1, "a number in [0, 1] (a training progress p)"),
    "schedule.alpha": (lambda v: v > 0, "a number > 0 (the warm start's steepness in p)"),
    "schedule.lo": (lambda v: v >= 0, "a number >= 0 (lambda scales a reversed gradient)"),
    "schedule.hi": (lambda v: v >= 0, "a number >= 0 (lambda scales a reversed gradient)"),
    "optimizer.sam_rho": (lambda v: v >= 0, "a number >= 0, or null for no SAM"),
    "optimizer.ema_decay": (lambda v: 0 < v < 1, "a number in (0, 1), or null for no EMA"),
    "loss.label_smoothing": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "loss.target_entropy": (lambda v: v >= 0, "a number >= 0 (0: off)"),
    "loss.mcc": (lambda v: v >= 0, "a number >= 0 (0: off)"),
    "loss.mcc_temperature": (lambda v: v > 0, "a number > 0"),
    "loss.bsp": (lambda v: v >= 0, "a number >= 0 (0: off)"),
    "loss.bsp_k": (lambda v: v >= 1, "an integer >= 1"),
    "loss.vat_source": (lambda v: v >= 0, "a number >= 0 (0: off)"),
    "loss.vat_target": (lambda v: v >= 0, "a number >= 0 (0: off)"),
    "loss.vat_radius": (lambda v: v > 0, "a number > 0"),
    "unknown_threshold": (lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    "loss.teacher": (lambda v: v >= 0, "a number >= 0 (0: off)"),
    "loss.teacher_interval": (lambda v: v >= 1 and v == int(v), "an integer >= 1 (steps)"),
    "dataset.augment_shift": (lambda v: v >= 0 and v == int(v), "an integer >= 0 (pixels)"),
    "method.weight": (lambda v: v >= 0, "a number >= 0"),
    "backbone.lr_mult": (lambda v: v >= 0, "a number >= 0"),
    "trainer.max_epochs": (lambda v: v >= -1, "an integer >= 1, or -1 with trainer.max_steps"),
    "trainer.gradient_clip_val": (lambda v: v > 0, "a number > 0, or null for no clipping"),
}


_validated: list[dict] = []  # the last config that passed: train.py and run() both validate


def validate(cfg: DictConfig) -> None:
    """Raise a ConfigError for the first unknown key or out-of-range value in `cfg`."""
    container = OmegaConf.to_container(cfg, resolve=True)
    if container in _validated:
        return
    check_keys(container)
    check_ranges(container)
    check_token_backbone(container)
    check_image_backbone(container)
    from dann.models.norm import check_norm  # torch: after the checks above
    from dann.selection import NOT_SELECTABLE, VALIDATORS

    check_target_terms(container)
    norm = container.get("norm") or {}
    if norm:
        check_norm(norm.get("mode"), norm.get("eval_stats"))
    metrics = {metric for metric, _ in VALIDATORS.values()} - set(NOT_SELECTABLE)
    selection = container.get("selection") or {}
    if selection.get("metric") in NOT_SELECTABLE:
        raise ConfigError(
            f"selection.metric={selection['metric']} is logged but not offered for selection: "
            f"{NOT_SELECTABLE[selection['metric']]}; choose one of {', '.join(sorted(metrics))}"
        )
    if selection.get("metric") not in metrics:
        raise ConfigError(
            f"selection.metric={selection.get('metric')!r} is not a validator's metric; valid "
            f"choices: {', '.join(sorted(metrics))} (or pick one with selection=<name>: "
            f"{', '.join(n for n, (m, _) in VALIDATORS.items() if m in metrics)})"
        )
    if selection.get("mode") not in ("min", "max"):
        raise ConfigError(f"selection.mode={selection.get('mode')!r}: choose min or max")
    check_selection_is_logged(selection["metric"], container.get("callbacks") or {})
    if selection["metric"] == ORACLE_METRIC:
        log.warning(
            "selection.metric=%s (selection=target_oracle): the checkpoint is picked with TARGET "
            "LABELS, so the results are oracle numbers, not a domain-adaptation result",
            ORACLE_METRIC,
        )
    _validated[:] = [container]


def check_target_terms(tree: dict) -> None:
    """A loss term needs a method that forwards target data in training (dann/losses.py); a
    refinement stage (DIRT-T) needs a trained start."""
    from dann.losses import TERMS  # torch: imported by the caller already

    target = (tree.get("method") or {}).get("_target_")
    if not target:
        return
    cls = get_class(target)
    name = target.rsplit(".", 1)[-1]
    if getattr(cls, "refines", False) and not (tree.get("init_from") or tree.get("ckpt_path")):
        raise ConfigError(
            f"method={name} refines a trained model on the target alone and needs one to start "
            "from: init_from=<checkpoint of a run on this pair> (e.g. a VADA or DANN run's "
            "<run dir>/checkpoints/last.ckpt); see experiment=dirt_t_mnist_to_mnistm"
        )
    if getattr(cls, "forwards_target", True):
        return
    loss = tree.get("loss") or {}
    for term in TERMS:
        if loss.get(term):
            raise ConfigError(
                f"loss.{term}={loss[term]} would be ignored: the method ({name}) never forwards "
                "target data in training, so its predictions and features are not there to "
                f"take the term of. Set loss.{term}=0, or pick a method that does (method=dann, "
                "cdan, ...)"
            )


def check_required(cfg: DictConfig, usage: str) -> None:
    """The top-level values a script's config leaves to the command line (`???`), all given;
    else a ConfigError naming the missing ones, with `usage` as the example."""
    missing = [f"{key}=" for key in cfg if OmegaConf.is_missing(cfg, key)]
    if missing:
        raise ConfigError(f"{' and '.join(missing)} missing: for example, {usage}")


# configs/hydra/launcher options that need a Hydra plugin, and the extra that installs it
LAUNCHER_PLUGINS = {"slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm")}


def check_command_line(config_name: str, argv: list[str]) -> None:
    """Before Hydra composes `config_name` with `argv`: a `key=value` for a key the config does
    not have is a ConfigError naming the closest key (Hydra's own message would advise
    `+key=value`, adding the misspelt key), and a launcher whose plugin is not installed names
    the extra to install. Anything else is left to Hydra."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    if "--version" in argv:
        return
    try:
        args, _ = get_args_parser().parse_known_args(argv)
    except SystemExit:  # a bad flag: Hydra's to report
        return
    flags = ("help", "hydra_help", "shell_completion", "experimental_rerun", "config_dir")
    if any(vars(args)[k] for k in flags) or args.config_path:
        return  # no run, or configs from elsewhere: Hydra's
    try:
        overrides = OverridesParser.create().parse_overrides(args.overrides)
    except Exception:  # a syntax error: Hydra says where
        return
    for o in overrides:
        launcher = o.value() if o.key_or_group == "hydra/launcher" else None
        plugin = LAUNCHER_PLUGINS.get(launcher) if isinstance(launcher, str) else None
        if plugin and not _installed(plugin[0]):
            raise ConfigError(
                f"hydra/launcher={launcher} needs the Hydra plugin {plugin[0]}: "
                f'pip install -e ".[{plugin[1]}]"'
            )
    plain = [
        o.key_or_group
        for o in overrides
        if o.type == OverrideType.CHANGE
        and o.package is None
        and "/" not in o.key_or_group
        and not (CONFIGS / o.key_or_group).is_dir()  # a config group: Hydra lists its options
        and not o.key_or_group.startswith("hydra.")
    ]
    name = args.config_name or config_name
    if f"{name}.yaml" in TOP_LEVEL_FILES and all(_declared(key) for key in plain):
        return  # every key is in a config file: Hydra will find it
    if any(o.is_sweep_override() and (CONFIGS / o.key_or_group).is_dir() for o in overrides):
        return  # a sweep over config options: which keys exist depends on the job
    kept = [o.input_line for o in overrides if not o.is_sweep_override()]
    tree = _composed(name, [line for line in kept if line.split("=")[0] not in plain])
    if tree is None:
        return
    for key in plain:
        parts = key.split(".")
        depth = 0  # parts[:depth] exist
        node = tree
        while depth < len(parts) and isinstance(node, dict) and parts[depth] in node:
            node, depth = node[parts[depth]], depth + 1
        if depth == len(parts):
            continue
        if not isinstance(node, dict):
            return  # a list or a value where the key wants a node: Hydra says so
        close = difflib.get_close_matches(parts[depth], [str(k) for k in node], n=1, cutoff=0.6)
        if close:
            hint = f"did you mean {'.'.join([*parts[:depth], close[0]])}?"
        else:
            hint = f"its keys: {', '.join(sorted(str(k) for k in node))}"
            if "_target_" in node and depth == len(parts) - 1:
                hint += f" (an argument the config does not set: +{key}=...)"
        raise ConfigError(f"unknown config key {'.'.join(parts[: depth + 1])}; {hint}")


def _installed(module: str) -> bool:
    from importlib.util import find_spec

    try:
        return find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing too
        return False


def _declared(key: str) -> bool:
    """Whether some config file sets `key` (dotted), from the files alone."""
    *parents, leaf = key.split(".")
    if parents and (CONFIGS / parents[0]).is_dir():
        return leaf in _declared_keys(parents[0], tuple(parents[1:]))
    return leaf in _declared_keys("", tuple(parents))


def _composed(config_name: str, overrides: list[str]) -> dict | None:
    """configs/<config_name>.yaml with `overrides` (and the hydra node), unresolved, or None if
    Hydra refuses them (it will say why)."""
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    except Exception:
        return None
    return OmegaConf.to_container(cfg, resolve=False)


def check_token_backbone(tree: dict) -> None:
    """dataset.representation=tokens (word ids) and a backbone that embeds ids go together."""
    tokens = (tree.get("dataset") or {}).get("representation") == "tokens"
    embeds = "vocab_size" in ((tree.get("backbone") or {}).get("features") or {})
    if tokens and not embeds:
        raise ConfigError(
            "dataset.representation=tokens gives word ids: use backbone=gru_tokens, which embeds "
            "them (or dataset.representation=bow for this backbone)"
        )
    if embeds and not tokens:
        raise ConfigError(
            "backbone=gru_tokens reads word ids: use it with dataset=text "
            "dataset.representation=tokens"
        )


def check_image_backbone(tree: dict) -> None:
    """An image backbone (sized by in_channels; the MLP, which also reads feature vectors, has
    in_features) needs a pair of images: one with dataset.channels."""
    dataset = tree.get("dataset") or {}
    features = (tree.get("backbone") or {}).get("features") or {}
    image_only = "in_channels" in features and "in_features" not in features
    if image_only and dataset.get("channels") is None:
        name = str(features.get("_target_", "this backbone")).rsplit(".", 1)[-1]
        raise ConfigError(
            f"{name} reads images, and dataset={dataset.get('name')} has none (no "
            "dataset.channels): use backbone=mlp for feature vectors, backbone=gru or "
            "backbone=conv1d for sequences"
        )


def callback_configs(callbacks: Mapping | None, cls: type) -> list:
    """The callback configs (dicts or DictConfigs) whose `_target_` is `cls` or a subclass."""
    found = []
    for node in (callbacks or {}).values():
        target = node.get("_target_") if isinstance(node, Mapping) else None
        if target and issubclass(get_class(target), cls):
            found.append(node)
    return found


def check_selection_is_logged(metric: str, callbacks: dict) -> None:
    """A selection metric only the SelectionValidators callback logs needs that callback, where a
    callback (a checkpoint, early stopping) monitors it; with none (callbacks=none) nothing picks
    a checkpoint and the run tests its final weights, whatever `selection` says."""
    from dann.selection import VALIDATORS

    monitored = any(
        isinstance(node, Mapping) and node.get("monitor") == metric
        for node in (callbacks or {}).values()
    )
    if metric in LOGGED_BY_MODULE or not monitored:
        return
    from dann.callbacks import SelectionValidators  # Lightning: only for a full config

    if callback_configs(callbacks, SelectionValidators):
        return
    name = next((n for n, (m, _) in VALIDATORS.items() if m == metric), metric)
    raise ConfigError(
        f"selection.metric={metric} (selection={name}) is logged by the selection_validators "
        "callback, which this config does not have (callbacks=none or "
        "~callbacks.selection_validators). Keep it (callbacks=default, without "
        "~callbacks.selection_validators), or select on a metric the model logs itself: "
        "selection=source_val"
    )


def _get(tree: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def check_ranges(tree: dict) -> None:
    for field, (is_allowed, allowed) in RANGES.items():
        value = _get(tree, field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{field}={value!r} must be {allowed}")
        if not is_allowed(value):
            raise ConfigError(f"{field}={value} is out of range: it must be {allowed}")
    trainer = tree.get("trainer") or {}
    if trainer.get("max_epochs") == 0 or (
        trainer.get("max_epochs", 1) < 0 and (trainer.get("max_steps") or -1) < 0
    ):
        raise ConfigError(
            f"trainer.max_epochs={trainer.get('max_epochs')} with trainer.max_steps="
            f"{trainer.get('max_steps')}: the schedules need a finite run; set max_epochs >= 1 "
            "or max_steps >= 1"
        )


@cache
def _config_file(path: Path) -> tuple[bool, dict]:
    """(written at the global package?, the file's content, interpolations unresolved)."""
    text = path.read_text()
    return "@package _global_" in text, yaml.safe_load(text) or {}


@cache
def _declared_keys(group: str, subpath: tuple[str, ...]) -> frozenset[str]:
    """The keys at `subpath` in any config file of `group` ('' = the top-level files), or set
    there by a file written at the global package (experiment presets, some datasets)."""
    files = (
        [CONFIGS / f for f in TOP_LEVEL_FILES] if not group else [*(CONFIGS / group).glob("*.yaml")]
    )
    files += [*(CONFIGS / "experiment").glob("*.yaml")]
    keys: set[str] = set()
    for path in files:
        at = subpath
        is_global, node = _config_file(path)
        if is_global:
            at = (group, *subpath) if group else subpath
        elif path.parent.name != (group or "configs"):
            continue
        for part in at:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            keys |= set(node) - {"defaults"}
    if not group:
        keys |= {p.name for p in CONFIGS.iterdir() if p.is_dir()}
    return frozenset(keys)


@cache
def _declared_target_keys(target: str) -> frozenset[str]:
    """The keys any config file gives a node whose `_target_` is `target` (no import)."""
    keys: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            if node.get("_target_") == target:
                keys.update(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in CONFIGS.rglob("*.yaml"):
        walk(_config_file(path)[1])
    return frozenset(keys)


def _target_arguments(target: str) -> set[str] | None:
    """The keyword arguments `target` accepts, or None when it takes **kwargs.

    Read from the source when it can be (no import: `pytorch_lightning.Trainer` would take
    seconds), else from the imported object's signature."""
    known = source_arguments(target)
    if known is not None:
        return known
    obj = get_object(target)
    params = inspect.signature(obj.__init__ if inspect.isclass(obj) else obj).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return set(params) - {"self"}


def dataset_arguments() -> set[str]:
    """The keys any dataset config may set: DomainAdaptationDataModule's arguments."""
    from dann.data import DomainAdaptationDataModule

    return set(inspect.signature(DomainAdaptationDataModule.__init__).parameters) - {"self"}


def check_keys(tree: dict, path: tuple[str, ...] = ()) -> None:
    everything = None  # the full set of valid keys, imported only for a key no config declares
    if "_target_" in tree:
        valid = set(_declared_target_keys(tree["_target_"]))
        everything = functools.partial(_target_arguments, tree["_target_"])
        where = f"{tree['_target_']} takes no such argument"
    elif path and path[0] in FREE_FORM and len(path) == 1:
        valid, where = None, ""
    else:
        group, subpath = (path[0], path[1:]) if path else ("", ())
        if path and not (CONFIGS / group).is_dir():  # e.g. loss: a node of train.yaml
            # empty there: a plain nested value (e.g. a list or dict argument), not checked
            valid = set(_declared_keys("", path)) or None
            where = "no config declares it"
        else:
            valid = set(_declared_keys(group, subpath))
            if path == ("dataset",):
                everything = dataset_arguments
            where = (
                f"no config in configs/{group} declares it" if group else "no such top-level key"
            )
    if valid is not None and everything and not set(tree) <= valid | HYDRA_KEYS:
        more = everything()
        valid = None if more is None else valid | more  # None: the target takes **kwargs
    if valid is not None:
        for key in tree:
            if key not in valid and key not in HYDRA_KEYS:
                name = ".".join((*path, key))
                close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
                hint = (
                    f"did you mean {'.'.join((*path, close[0]))}?"
                    if close
                    else f"valid keys: {', '.join(sorted(valid))}"
                )
                raise ConfigError(f"unknown config key {name} ({where}); {hint}")
    for key, value in tree.items():
        if isinstance(value, dict) and key not in HYDRA_KEYS:
            check_keys(value, (*path, key))
