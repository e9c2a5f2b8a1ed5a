"""Evaluate a checkpoint on a dataset pair: accuracy, per-class accuracy, confusion matrices.

    python scripts/evaluate.py ckpt_path=outputs/runs/<run>/checkpoints/last.ckpt
    python scripts/evaluate.py ckpt_path=... dataset=mnist_to_usps split=val
    python scripts/evaluate.py ckpt_path=<table or text run>.ckpt dataset.target=new.csv

`ckpt_path` as in train.py; `ckpt=` is the same.

The checkpoint is read with `torch.load(weights_only=True)` (tensors and plain types only: no
code runs). The model is rebuilt from the hyper-parameters saved in it; images get the
training run's preprocessing (its channels, size and mean); tables, sequences and text get the
run's fitted preprocessing (statistics, categories, vocabulary, classes: a new file may hold a
subset of the classes; image folders keep the run's class names). Without `dataset=`, the pair
it was trained on is evaluated, with any `dataset.<key>=...` (a key of that pair's config, e.g.
dataset.target=new.csv) changed.

What is scored, per domain: the checkpoint's own data (its pair, same files or folders) on
`split` (test by default: the held-out rows or images, as train.py's test); new data, i.e. the
checkpoint's pair with that domain's file or folder changed (`dataset.source=` /
`dataset.target=`, `dataset.source_root=` / `dataset.target_root=`), on ALL its examples: a new
file is not training data, so none of it is held out (`split` is then ignored for it). Another
pair (`dataset=<pair>`) is scored on its `split`. Each domain's entry in metrics.json names
what was scored (`split`: test, val or all) and how many examples (`examples`; `n`: those with
a label, counted in the accuracy); the log says the same.

Writes `metrics.json` and `confusion_<domain>.png` to its own run dir
(outputs/eval/<date>_<time>/), prints a report. A missing, corrupt or mismatched
checkpoint is an error message and exit status 2.
"""

import json
import logging
import sys
from dataclasses import replace
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

from dann.checkpoints import load_checkpoint  # noqa: E402
from dann.config_check import check_command_line, dataset_arguments  # noqa: E402
from dann.data import DomainAdaptationDataModule  # noqa: E402
from dann.data.datamodule import DOMAINS  # noqa: E402
from dann.data.folders import ImageFiles  # noqa: E402
from dann.data.registry import UNLABELLED, DomainData, Split  # noqa: E402
from dann.errors import ConfigError, reported_as_exit  # noqa: E402
from dann.inference import module_from_checkpoint  # noqa: E402
from dann.run_dir import discard_refused_launch  # noqa: E402

log = logging.getLogger("evaluate")

# what the model was trained to take as input: kept from the checkpoint on any dataset
INPUT_FORMAT = ("channels", "image_size")


# keys any pair takes (DomainAdaptationDataModule's arguments)
DATAMODULE_KEYS = dataset_arguments() - {"options"}

# the dataset keys naming a domain's data (a file, an image folder, an Office-31 domain): one
# changed on the checkpoint's pair makes that domain new data, scored whole
DATA_KEYS = {domain: (domain, f"{domain}_root") for domain in DOMAINS}


def checkpoint_pair_overrides(argv: list[str]) -> list[str]:
    """Without `dataset=<pair>`, `dataset.<key>=v` changes the checkpoint's pair, whose keys
    (e.g. `target` of a table) train.yaml's default dataset may lack: pass such overrides to
    Hydra as `++dataset.<key>=v` (add or override); dataset_config() checks the key."""
    if any(a.lstrip("+~").split("=")[0] == "dataset" for a in argv):
        return argv
    return ["++" + a if a.startswith("dataset.") and "=" in a else a for a in argv]


def dataset_config(cfg: DictConfig, trained_on: dict, overrides: list[str] | None = None) -> dict:
    """The dataset to evaluate: `dataset=<pair>` from the command line, else the training pair,
    with any `dataset.<key>=...` from the command line (e.g. `dataset.root=/new`) applied.
    `overrides`: the command line's (default: Hydra's task overrides)."""
    if overrides is None:
        overrides = list(HydraConfig.get().overrides.task)
    keys = [o.split("=")[0].lstrip("+~") for o in overrides]
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
                if field not in dataset and field not in DATAMODULE_KEYS:
                    known = sorted({*dataset, *DATAMODULE_KEYS} - {"data_dir", "name"})
                    raise ConfigError(
                        f"{key}: the checkpoint's pair {dataset.get('name')!r} has no such key; "
                        f"its keys: {', '.join(known)} (or evaluate on another pair: dataset=...)"
                    )
                dataset[field] = chosen.get(field)
    dataset.update({k: trained_on[k] for k in INPUT_FORMAT if k in trained_on})
    return dataset


def _same_place(a, b) -> bool:
    if a == b:
        return True
    if a is None or b is None:
        return False
    return Path(str(a)).expanduser().resolve() == Path(str(b)).expanduser().resolve()


def new_domains(dataset: dict, trained_on: dict) -> list[str]:
    """The domains of the checkpoint's own pair whose file or folder the command line changed
    (e.g. `dataset.target=new_b.csv`): data the model was not trained on. Another pair
    (`dataset=mnist_to_digits`) has none: it is scored on its split like the checkpoint's."""
    if dataset.get("name") != trained_on.get("name"):
        return []
    trained = {**trained_on, **(trained_on.get("options") or {})}
    return [
        domain
        for domain in DOMAINS
        if not all(_same_place(dataset.get(k), trained.get(k)) for k in DATA_KEYS[domain])
    ]


def whole(domain: DomainData):
    """Every example of a domain once, as evaluated: the splits of a file pair joined (a split
    that serves twice, val = test, shares its labels tensor and is counted once), or an image
    folder's files with the evaluation transform; None for other kinds of split."""
    splits = (domain.train, domain.val, domain.test)
    if all(isinstance(s, Split) for s in splits):
        parts = list({id(s.labels): s for s in splits}.values())
        return Split(torch.cat([s.inputs for s in parts]), torch.cat([s.labels for s in parts]))
    if all(isinstance(s, ImageFiles) for s in splits):
        samples = dict.fromkeys(sample for s in splits for sample in s.samples)
        return ImageFiles(list(samples), domain.test.transform)
    return None


def score_new_data_whole(datamodule, split: str, new: list[str]) -> dict[str, str]:
    """Make `split` of each new domain all of its examples (in datamodule.data); returns what
    each domain is scored on: `all` or `split`."""
    scored = {}
    for domain in DOMAINS:
        data = getattr(datamodule.data, domain)
        everything = whole(data) if domain in new else None
        if everything is not None:
            data = replace(data, **{split: everything})
            datamodule.data = replace(datamodule.data, **{domain: data})
        scored[domain] = split if everything is None else "all"
    return scored


@torch.no_grad()
def evaluate(module, datamodule, split: str) -> dict:
    """Per domain: accuracy, per-class accuracy and the confusion matrix (rows = true class).
    Classes are the model's: the pair's, or those a label set kept (class i = the i-th of
    dataset.source_classes), and "unknown" last for a checkpoint trained for an open-set target
    (predicted by the run's rule, dann/open_set.py)."""
    rule = module.open_set
    num_classes = len(module.class_ids) + (rule is not None)
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
            if rule is not None:
                features = module.features(x, idx)
                predicted = rule.predict(logits, module.method.unknown(features, logits))
            else:
                predicted = logits.argmax(dim=1)
            labelled = y != UNLABELLED  # a target file without labels: nothing to score
            for metric in (accuracy, per_class, confusion) if labelled.any() else ():
                metric.update(predicted[labelled], y[labelled])
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
    with reported_as_exit(on_error=discard_refused_launch):  # no run dir left behind
        _evaluate(cfg)


def checkpoint_argument(cfg: DictConfig) -> str:
    """The checkpoint to evaluate: `ckpt_path=` (train.py's name) or its alias `ckpt=`."""
    given = {k: str(cfg[k]) for k in ("ckpt_path", "ckpt") if cfg.get(k) is not None}
    if not given:
        raise ConfigError(
            "ckpt_path= missing: for example, python scripts/evaluate.py "
            "ckpt_path=outputs/runs/<run>/checkpoints/last.ckpt"
        )
    if len(set(given.values())) > 1:
        raise ConfigError(f"ckpt_path={given['ckpt_path']} and ckpt={given['ckpt']}: give one")
    return next(iter(given.values()))


def _evaluate(cfg: DictConfig) -> None:
    path = checkpoint_argument(cfg)
    ckpt = load_checkpoint(path)
    module = module_from_checkpoint(ckpt, path)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    module.to(device).eval()

    trained_on = ckpt.get("datamodule_hyper_parameters", {})
    dataset = dataset_config(cfg, trained_on)
    state = ckpt.get(DomainAdaptationDataModule.__qualname__, {})
    if state.get("preprocessing") is not None and dataset["name"] == trained_on.get("name"):
        # the run's fitted statistics / vocabulary / classes from the start: nothing is fitted
        # on the files at hand (a new file may hold only some of the trained classes)
        dataset["preprocessing"] = state["preprocessing"]
    datamodule = DomainAdaptationDataModule(**dataset)
    datamodule.setup("test")
    # the training run's per-channel mean, not this dataset's
    datamodule.load_state_dict(state)
    scored = score_new_data_whole(datamodule, cfg.split, new_domains(dataset, trained_on))
    name = datamodule.hparams.name
    examples = {d: len(getattr(getattr(datamodule.data, d), cfg.split)) for d in DOMAINS}
    for domain, split in scored.items():
        what = (
            f"all {examples[domain]} examples (new data, not the checkpoint's: none held out)"
            if split == "all"
            else f"its {split} split, {examples[domain]} examples"
        )
        log.info(
            "%s %s (%s): scoring %s", name, domain, getattr(datamodule.data, domain).name, what
        )
    results = evaluate(module, datamodule, cfg.split)
    for domain, r in results.items():
        results[domain] = {"split": scored[domain], "examples": examples[domain], **r}

    out = Path(HydraConfig.get().runtime.output_dir)
    for domain, r in results.items():
        if r["n"] == 0:
            log.info("%s %s %s: no labels, not scored", name, domain, r["split"])
            continue
        fig, ax = r.pop("_confusion").plot()
        ax.set_title(f"{name} {domain} {r['split']}: acc {r['accuracy']:.4f}")
        fig.savefig(out / f"confusion_{domain}.png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        per_class = " ".join(f"{a:.2f}" for a in r["per_class_accuracy"])
        log.info(
            "%s %s %s: accuracy %.4f (n=%d) | per class: %s",
            name,
            domain,
            r["split"],
            r["accuracy"],
            r["n"],
            per_class,
        )
    report = {"checkpoint": path, "dataset": datamodule.hparams.name, "split": cfg.split}
    (out / "metrics.json").write_text(json.dumps({**report, **results}, indent=2) + "\n")
    log.info("wrote %s and confusion_{source,target}.png", out / "metrics.json")


if __name__ == "__main__":
    sys.argv[1:] = checkpoint_pair_overrides(sys.argv[1:])
    with reported_as_exit():
        check_command_line("evaluate", sys.argv[1:])  # a misspelt key, before Hydra's advice
    main()
