"""DIRT-T's refinement stage (Shu, Bui, Narui, Ermon, ICLR 2018, "A DIRT-T Approach to
Unsupervised Domain Adaptation"): starting from a trained model (VADA in the paper;
`init_from=<checkpoint>`), train on the target alone: its conditional entropy, virtual
adversarial training on its inputs, and KL(teacher || student) of its predictions, where the
teacher is the network itself, frozen and refreshed every `loss.teacher_interval` steps
(`dann.teacher.Teacher`). The source labels and the domain adversary are switched off. The
terms are the shared `dann.losses` terms, brought with the reference's weights (`loss_terms`);
`loss.<term>=...` overrides each.

Reference code: RuiShu/dirt-t (`codebase/models/dirtt.py`, `codebase/train.py`, `run_dirtt.py`
with `--dirt 5000`): target weight 1e-2 (entropy and VAT), teacher weight 1e-2 (`bw`), teacher
refreshed every 5000 of 80,000 iterations, Adam (lr 1e-3, beta1 0.5), VAT radius 3.5.
Departures:
- the teacher is a copy of the student's weights, where the reference copies the student's
  exponential moving average (its evaluation model);
- the reference replaces the source batch with a second target batch labelled by the teacher;
  here each step's target rows carry all three terms (one batch of the target); the source rows
  are forwarded in eval mode without gradient, for the logged train/label_loss and source
  accuracy only, so no BatchNorm statistic sees them;
- the refresh interval is in optimiser steps of this run (`experiment=dirt_t_mnist_to_mnistm`
  sets one sixteenth of the run, the reference's ratio).
"""

from dann.methods.base import AdaptationMethod, AdaptationOutput


class DIRTT(AdaptationMethod):
    uses_target_logits = True
    forwards_source = False  # the source rows are forwarded in eval mode, for the logs only
    refines = True  # needs a trained start: init_from=<checkpoint> (checked before training)

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        target_weight: float = 1e-2,
        teacher_weight: float = 1e-2,
    ):
        super().__init__()
        self._terms = {
            "target_entropy": float(target_weight),
            "vat_target": float(target_weight),
            "teacher": float(teacher_weight),
        }

    def forward(self, features, logits, num_source, lambda_) -> AdaptationOutput:
        return AdaptationOutput()  # every loss is a shared term (loss_terms)

    def loss_terms(self) -> dict[str, float]:
        return dict(self._terms)
