"""Conventions of Lightning + Hydra projects (lightning-hydra-template) that `dann.train.run`
applies: `tags=[...]` labels a run, `extras.print_config=true` prints the resolved config."""

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dann.errors import ConfigError

log = logging.getLogger(__name__)


def run_tags(cfg: DictConfig) -> list[str]:
    """`cfg.tags` as a list of strings: `tags=[a,b]`, or `tags=a` for one."""
    tags = cfg.get("tags")
    if tags is None:
        return []
    if isinstance(tags, str | int | float):
        return [str(tags)]
    tags = OmegaConf.to_container(tags, resolve=True) if OmegaConf.is_config(tags) else tags
    if not isinstance(tags, list) or any(isinstance(t, dict | list) for t in tags):
        raise ConfigError(f"tags={tags!r}: give a list of words, e.g. tags=[baseline,first_try]")
    return [str(t) for t in tags]


def save_tags(tags: list[str], out_dir: str | Path) -> None:
    """<run dir>/tags.log: one tag per line (written at the start: a failed run keeps them)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tags.log").write_text("".join(f"{t}\n" for t in tags))


def print_config(cfg: DictConfig) -> None:
    """The resolved config, one branch per top-level key: a rich tree when `rich` is installed,
    else plain YAML in the log."""
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation only Hydra's app resolves (tests, compose API)
        resolved = OmegaConf.to_container(cfg, resolve=False)
    try:
        import rich
        from rich.syntax import Syntax
        from rich.tree import Tree
    except ImportError:
        log.info("config:\n%s", OmegaConf.to_yaml(resolved))
        return
    tree = Tree("CONFIG", style="dim", guide_style="dim")
    for key, value in resolved.items():
        branch = tree.add(str(key), style="bold")
        text = OmegaConf.to_yaml(value) if isinstance(value, dict | list) else str(value)
        branch.add(Syntax(text.rstrip("\n"), "yaml", theme="ansi_dark", background_color="default"))
    rich.print(tree)
