"""PADA (Cao, Ma, Long, Wang, ECCV 2018, "Partial Adversarial Domain Adaptation"): DANN for
partial adaptation, where the target holds only some of the source's classes. Each source class
gets a weight, the mean target probability of that class normalised to mean 1 over the classes,
so the classes the target lacks fade from both the label loss and the domain discriminator's
source side, and the discriminator stops pulling target features towards them.

Reference code: thuml/PADA (`pytorch/src/train_pada.py`, `loss.py`): class weights from the
softmax outputs over the whole target set, re-estimated every 500 iterations from an
evaluation-mode pass, starting at 1; the label loss `CrossEntropyLoss(weight=class_weight)` (a
weighted mean: sum w_y l / sum w_y); the domain loss `BCELoss(weight=...)` with the source rows
weighted by their class's weight and the target rows by 1 (a plain mean of the weighted terms).
Departures:
- the weights are re-estimated once per training epoch, from the target predictions of that
  epoch's training steps (training mode, no extra pass over the target set), reduced over
  processes; they start at 1 as in the reference (logged as train/class_weight_min and _max);
- the adversary is this framework's DANN (its discriminator, `schedule` for lambda).
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F

from dann.methods.base import AdaptationOutput, domain_targets
from dann.methods.dann import DANN


class PADA(DANN):
    uses_target_logits = True  # the class weights come from the target predictions
    uses_source_labels = True  # the discriminator's source rows are weighted by their class
    settings = ("partial",)

    def __init__(self, in_features: int, num_classes: int, **kwargs):
        super().__init__(in_features, num_classes, **kwargs)
        self.register_buffer("class_weight", torch.ones(num_classes))
        self._probability_sum: torch.Tensor | None = None
        self._rows = 0

    def get_extra_state(self) -> dict:
        """The epoch's running sums, so a run resumed mid-epoch re-estimates the same weights."""
        return {"probability_sum": self._probability_sum, "rows": self._rows}

    def set_extra_state(self, state: dict) -> None:
        self._probability_sum, self._rows = state.get("probability_sum"), state.get("rows", 0)

    def label_class_weights(self) -> torch.Tensor:
        return self.class_weight

    def forward(self, features, logits, num_source, lambda_, source_labels=None):
        with torch.no_grad():  # the epoch's mean target prediction (detached)
            probs = F.softmax(logits[num_source:].float(), dim=1).sum(dim=0)
            self._probability_sum = (
                probs if self._probability_sum is None else self._probability_sum + probs
            )
            self._rows += len(logits) - num_source
        d = self.target_logit(self.discriminator(self.reverse(features, lambda_)))
        t = domain_targets(num_source, len(features), features.device)
        rows = torch.ones_like(t)
        rows[:num_source] = self.class_weight[source_labels]
        loss = F.binary_cross_entropy_with_logits(d, t, weight=rows)
        return AdaptationOutput({"domain_loss": self.weight * loss}, d, t)

    def on_train_epoch_end(self) -> dict[str, float]:
        """The class weights from this epoch's target predictions (all processes), then reset."""
        counts = torch.zeros(len(self.class_weight) + 1, device=self.class_weight.device)
        if self._probability_sum is not None:
            counts[:-1] = self._probability_sum
            counts[-1] = self._rows
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts, op=dist.ReduceOp.SUM)
        self._probability_sum, self._rows = None, 0
        if counts[-1] > 0:
            mean = counts[:-1] / counts[-1]
            self.class_weight.copy_(mean / mean.mean())
        return {
            "class_weight_min": float(self.class_weight.min()),
            "class_weight_max": float(self.class_weight.max()),
        }
