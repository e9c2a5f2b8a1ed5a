"""`ModuleEvaluation`: validation and test of `DALightningModule` (a mixin of it): each domain's
accuracy, the domain classifier's accuracy, the open-set metrics where the target holds unknown
classes (dann/open_set.py), AdaBN's re-estimated statistics before each evaluation, and what the
selection validators receive (features, logits, labels of every batch).

With `dataset.class_mean_accuracy=true`, the target's mean of per-class accuracies (over the
classes it holds; VisDA-2017's reported metric) is logged beside the accuracy.

It builds these metrics (`_add_eval_metrics`, called by the module's constructor) and reads the
module's `features`, `classifier`, `method`, `norm` and `_norms`.
"""

import torch
from torchmetrics.classification import (
    BinaryAccuracy,
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
)

from dann.data.datamodule import DOMAINS
from dann.data.registry import UNLABELLED
from dann.models.norm import TARGET, recompute_statistics, set_domains
from dann.open_set import OpenSetEvaluation


def mean_class_accuracy(confusion: torch.Tensor) -> torch.Tensor:
    """The mean over true classes (rows) of each class's accuracy, from a confusion matrix;
    classes with no example (absent from the target, as in partial adaptation) are left out."""
    support = confusion.sum(1)
    present = support > 0
    return (confusion.diagonal()[present] / support[present]).mean()


class ModuleEvaluation:
    def _add_eval_metrics(
        self, outputs: int, num_classes: int, label_sets: dict | None, class_mean_accuracy: bool
    ) -> None:
        """The validation and test metrics over the model's `outputs`: each domain's accuracy,
        the domain classifier's accuracy, the open-set metrics where the target holds
        classes the source lacks (dann/data/label_sets.py), and the confusion counts behind the
        target's mean per-class accuracy when asked for (VisDA-2017's reported metric)."""
        self.eval_acc = torch.nn.ModuleDict(
            {d: MulticlassAccuracy(outputs, average="micro") for d in DOMAINS}
        )
        self.eval_domain_acc = BinaryAccuracy()
        self.open_set = None
        if label_sets and label_sets["setting"] in ("open_set", "universal"):
            self.open_set = OpenSetEvaluation(num_classes, label_sets.get("unknown_threshold", 0.5))
        self.target_confusion = None
        if class_mean_accuracy and self.open_set is None:
            self.target_confusion = MulticlassConfusionMatrix(outputs)

    def _eval_step(self, stage: str, batch, dataloader_idx: int) -> dict:
        x, y = batch
        domain = DOMAINS[dataloader_idx]
        features = self.features(x, dataloader_idx)
        metric = self.eval_acc[domain]
        logits = self.classifier(features)
        known = y != UNLABELLED  # a target file without labels: its accuracy is not reported
        if known.all() and domain == "target" and self.open_set is not None:
            unknown = self.method.unknown(features, logits)  # OVANet's rule, else None
            self.open_set.update(logits, y, unknown)  # logged at the epoch's end
        elif known.all():
            metric(logits, y)
            self.log(f"{stage}/{domain}_acc", metric, on_epoch=True, add_dataloader_idx=False)
            if domain == "target" and self.target_confusion is not None:
                self.target_confusion.update(logits, y)
        d = self.method.domain_logits(features, logits=logits)
        if d is not None:
            # predicted labels (logit > 0, as in training), not logits: torchmetrics only applies
            # a sigmoid if some value is outside [0, 1], and near equilibrium DANN's logits are
            # all close to 0 (nor probabilities: in bf16, sigmoid of a logit below 0.008 is 0.5)
            self.eval_domain_acc.update(d > 0, torch.full_like(d, float(dataloader_idx)))
        # handed to callbacks' on_*_batch_end (the selection validators); Lightning keeps none
        return {"features": features.detach(), "logits": logits.detach(), "labels": y}

    def _log_epoch_metric(self, name: str, metric) -> None:
        """Log a metric accumulated over the epoch (if it saw any batch), then reset it."""
        if metric.update_called:
            # compute() already reduces across processes (torchmetrics)
            self.log(name, metric.compute(), sync_dist=True)
        metric.reset()

    def _eval_epoch_end(self, stage: str) -> None:
        self._log_epoch_metric(f"{stage}/domain_acc", self.eval_domain_acc)
        confusion = self.target_confusion
        if confusion is not None and confusion.update_called:
            counts = confusion.compute()  # reduced across processes by torchmetrics
            self.log(f"{stage}/target_class_mean_acc", mean_class_accuracy(counts), sync_dist=True)
            confusion.reset()
        scores = self.open_set.compute() if self.open_set is not None else None
        for name, value in (scores or {}).items():  # reduced across processes by torchmetrics
            self.log(f"{stage}/target_{name}", value, sync_dist=True)

    def _adapt_statistics(self) -> None:
        """AdaBN (norm.eval_stats=adabn): each domain's BatchNorm statistics re-estimated from
        its unlabelled training inputs, with the weights being evaluated (the layers on the
        prediction path: feature extractor and label classifier)."""
        if self.norm["eval_stats"] != "adabn" or not self._norms:
            return
        datamodule = self.trainer.datamodule
        for index, domain in enumerate(DOMAINS):
            batches = datamodule.unlabelled_batches(domain, self.device, self.norm["adabn_samples"])
            recompute_statistics(
                self, self._norms, batches, index, lambda x: self.classifier(self.features(x))
            )
        set_domains(self._norms, None, TARGET)

    def on_validation_epoch_start(self):
        self._adapt_statistics()

    def on_test_epoch_start(self):
        self._adapt_statistics()

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        return self._eval_step("val", batch, dataloader_idx)

    def on_validation_epoch_end(self):
        self._eval_epoch_end("val")

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        return self._eval_step("test", batch, dataloader_idx)

    def on_test_epoch_end(self):
        self._eval_epoch_end("test")
