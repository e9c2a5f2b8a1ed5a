"""Evaluate a checkpoint on a dataset pair: accuracy, per-class accuracy, confusion matrices.

    python scripts/evaluate.py ckpt=outputs/runs/<run>/checkpoints/last.ckpt
    python scripts/evaluate.py ckpt=... dataset=mnist_to_usps split=val

The checkpoint is read with `torch.load(weights_only=True)` (tensors and plain types only: no
code runs). The model is rebuilt from the hyper-parameters saved in it; images get the
training run's preprocessing (its channels, size and mean). Without `dataset=`, the pair it was
trained on is evaluated. Writes `metrics.json` and `confusion_<domain>.png` to its own run dir
(outputs/eval/<date>_<dataset>/), prints a report. A missing, corrupt or mismatched checkpoint
is an error message and exit status 2.
"""

import json
import logging
from pathlib import Path

import hydra
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from lightning_utilities.core.apply_func import apply_to_collection  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402
from torchmetrics.classification import (  # noqa: E402
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
)

from dann.checkpoints import load_checkpoint, load_state_checked  # noqa: E402
from dann.data import DomainAdaptationDataModule  # noqa: E402
from dann.data.datamodule import DOMAINS  # noqa: E402
from dann.data.registry import UNLABELLED  # noqa: E402
from dann.errors import reported_as_exit  # noqa: E402
from dann.module import DALightningModule  # noqa: E402

log = logging.getLogger("evaluate")

# what the model was trained to take as input: kept from the checkpoint on any dataset
INPUT_FORMAT = ("channels", "image_size")


def dataset_config(cfg: DictConfig, trained_on: dict) -> dict:
    """The dataset to evaluate: `dataset=<pair>` from the command line, else the training pair,
    with any `dataset.<key>=...` from the command line (e.g. `dataset.root=/new`) applied."""
    keys = [o.split("=")[0].lstrip("+~") for o in HydraConfig.get().overrides.task]
    chosen = OmegaConf.to_container(cfg.dataset, resolve=True)
    if "dataset" in keys:
        dataset = chosen
    else:
        dataset = {k: v for k, v in trained_on.items() if k != "train_on_target_labels"}
        dataset.update(dataset.pop("options", None) or {})
        dataset["data_dir"] = cfg.paths.data_dir
        for key in keys:
            if key.startswith("dataset."):
                field = key.split(".")[1]
                dataset[field] = chosen.get(field)
    dataset.update({k: trained_on[k] for k in INPUT_FORMAT if k in trained_on})
    return dataset


@torch.no_grad()
def evaluate(module, datamodule, split: str, num_classes: int) -> dict:
    """Per domain: accuracy, per-class accuracy and the confusion matrix (rows = true class)."""
    loaders = getattr(datamodule, f"{split}_dataloader")()
    results = {}
    for idx, (domain, loader) in enumerate(zip(DOMAINS, loaders, strict=True)):
        accuracy = MulticlassAccuracy(num_classes, average="micro").to(module.device)
        per_class = MulticlassAccuracy(num_classes, average=None).to(module.device)
        confusion = MulticlassConfusionMatrix(num_classes).to(module.device)
        for batch in loader:
            batch = apply_to_collection(batch, torch.Tensor, lambda t: t.to(module.device))
            x, y = datamodule.on_after_batch_transfer(batch, idx)
            logits = module(x, idx)  # each domain with its own normalisation statistics
            known = y != UNLABELLED  # a target file without labels: nothing to score
            for metric in (accuracy, per_class, confusion) if known.any() else ():
                metric.update(logits[known], y[known])
        if not confusion.confmat.sum():
            results[domain] = {"accuracy": None, "n": 0, "note": "no labels in this split"}
            continue
        results[domain] = {
            "accuracy": float(accuracy.compute()),
            "per_class_accuracy": per_class.compute().tolist(),
            "confusion_matrix": confusion.compute().tolist(),
            "n": int(confusion.compute().sum()),
            "_confusion": confusion,
        }
    return results


@hydra.main(version_base="1.3", config_path="../configs", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    with reported_as_exit():
        _evaluate(cfg)


def _evaluate(cfg: DictConfig) -> None:
    ckpt = load_checkpoint(cfg.ckpt)
    hp = ckpt["hyper_parameters"]
    module = DALightningModule(**hp)
    load_state_checked(module, ckpt["state_dict"], cfg.ckpt)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    module.to(device).eval()

    datamodule = DomainAdaptationDataModule(
        **dataset_config(cfg, ckpt.get("datamodule_hyper_parameters", {}))
    )
    datamodule.setup("test")
    # the training run's per-channel mean, not this dataset's
    datamodule.load_state_dict(ckpt.get(type(datamodule).__qualname__, {}))
    results = evaluate(module, datamodule, cfg.split, hp["num_classes"])

    out = Path(HydraConfig.get().runtime.output_dir)
    for domain, r in results.items():
        if r["n"] == 0:
            log.info("%s %s %s: no labels, not scored", datamodule.hparams.name, domain, cfg.split)
            continue
        fig, ax = r.pop("_confusion").plot()
        ax.set_title(f"{datamodule.hparams.name} {domain} {cfg.split}: acc {r['accuracy']:.4f}")
        fig.savefig(out / f"confusion_{domain}.png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        per_class = " ".join(f"{a:.2f}" for a in r["per_class_accuracy"])
        log.info(
            "%s %s %s: accuracy %.4f (n=%d) | per class: %s",
            datamodule.hparams.name,
            domain,
            cfg.split,
            r["accuracy"],
            r["n"],
            per_class,
        )
    report = {"checkpoint": str(cfg.ckpt), "dataset": datamodule.hparams.name, "split": cfg.split}
    (out / "metrics.json").write_text(json.dumps({**report, **results}, indent=2) + "\n")
    log.info("wrote %s and confusion_{source,target}.png", out / "metrics.json")


if __name__ == "__main__":
    main()
