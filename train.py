"""Entry point: `python train.py [group=option] [key=value]`, or `-m` for a sweep.
Configs live in configs/ (start at configs/train.yaml); the work is in dann.train.run."""

import sys

import hydra
from omegaconf import DictConfig

from dann.config_check import check_command_line, validate
from dann.errors import reported_as_exit
from dann.run_dir import discard_refused_launch


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    with reported_as_exit(on_error=discard_refused_launch):
        validate(cfg)  # before torch and Lightning load: a config error in about a second
        # imported here so `--help`, `--cfg` and config errors stay fast
        from dann.search import diverged_trial_fails_alone
        from dann.train import run

        with diverged_trial_fails_alone(cfg):
            summary = run(cfg)
    return summary[f"selected_{cfg.selection.metric}"]  # for Hydra sweepers that optimise


if __name__ == "__main__":
    with reported_as_exit():
        check_command_line("train", sys.argv[1:])  # a misspelt key, before Hydra's advice
    main()
