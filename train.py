"""Entry point: `python train.py [group=option] [key=value]`, or `-m` for a sweep.
Configs live in configs/ (start at configs/train.yaml); the work is in dann.train.run."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    # imported here so `--help` and `--cfg` stay fast
    from dann.errors import reported_as_exit
    from dann.search import diverged_trial_fails_alone
    from dann.train import run

    with reported_as_exit(), diverged_trial_fails_alone(cfg):
        summary = run(cfg)
    return summary[f"selected_{cfg.selection.metric}"]  # for Hydra sweepers that optimise


if __name__ == "__main__":
    main()
