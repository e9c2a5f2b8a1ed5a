"""What a launch of train.py leaves in its run dir (Hydra and torch-free: runs before either
heavy import).

- Hydra writes `.hydra/{config,hydra,overrides}.yaml` before any of our code runs. A launch
  into a run dir that already has them (a resume with `ckpt_path=last`, or a launch that is
  refused) writes its own to `.hydra/launch_<date>_<time>/` instead (`KeepEachLaunch`, a Hydra
  callback in configs/train.yaml), so the first launch's overrides (what `ckpt_path=last`
  needs repeated) stay as they were, and every launch's stay readable.
- A launch refused before it wrote anything (a config error, an existing run without
  `ckpt_path`, missing data) leaves nothing behind: `discard_refused_launch` removes the run
  dir Hydra made for it, or, in an existing run dir, its `.hydra/launch_*` folder.
"""

import shutil
import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, read_write

LAUNCH_PREFIX = "launch_"


class KeepEachLaunch(Callback):
    """A single run (not a sweep job) into a run dir that already holds Hydra's files: this
    launch's go to `<output_subdir>/launch_<date>_<time>/`."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        subdir = config.hydra.output_subdir
        try:
            run_dir = Path(config.hydra.run.dir)
        except Exception:  # an interpolation Hydra resolves later: a new, timestamped dir
            return
        if subdir is None or not (run_dir / subdir / "overrides.yaml").is_file():
            return
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        launch, n = f"{subdir}/{LAUNCH_PREFIX}{stamp}", 1
        while (run_dir / launch).exists():
            n += 1
            launch = f"{subdir}/{LAUNCH_PREFIX}{stamp}_{n}"
        with read_write(config.hydra):
            config.hydra.output_subdir = launch


def discard_refused_launch() -> None:
    """After train.py refused to run (a DannError): if the launch wrote nothing but Hydra's
    files and its log, remove them: the whole run dir when Hydra made it for this launch, else
    this launch's `.hydra/launch_*` folder. A sweep job's dir is kept (the sweep reports it)."""
    if not HydraConfig.initialized():
        return
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.RUN or hydra.output_subdir is None:
        return
    out = Path(hydra.runtime.output_dir)
    own = out / hydra.output_subdir
    log_file = f"{hydra.job.name}.log"
    written = [
        p
        for p in out.rglob("*")
        if p.is_file() and p.relative_to(out).parts[0] not in (".hydra", log_file)
    ]
    if Path(hydra.output_subdir).name.startswith(LAUNCH_PREFIX):  # an existing run's dir
        started = (own / "overrides.yaml").stat().st_mtime
        if not any(p.stat().st_mtime >= started for p in written):
            shutil.rmtree(own, ignore_errors=True)
    elif not written and own.name == ".hydra":
        shutil.rmtree(out, ignore_errors=True)
