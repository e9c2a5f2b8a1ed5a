"""DIRT-T's teacher (Shu, Bui, Narui, Ermon, ICLR 2018): a frozen copy of the prediction path
(feature extractor + label classifier) whose target predictions the student is pulled towards
(the `teacher` loss term, dann/losses.py), refreshed from the student every `interval` optimiser
steps, first at step 0 (so a run started with `init_from=` begins with the loaded weights as
teacher). It predicts in eval mode (running BatchNorm statistics, as the reference's teacher),
with the target's statistics where the normalisation is per domain. Its weights are module
state: checkpoints carry them, and a resumed run refreshes on the same steps.
"""

import copy

import torch
from torch import nn

from dann.models.norm import TARGET, domain_norms, eval_mode, set_domains


class Teacher(nn.Module):
    def __init__(self, feature_extractor: nn.Module, classifier: nn.Module, interval: int):
        super().__init__()
        self.interval = int(interval)
        if self.interval < 1:
            raise ValueError(f"loss.teacher_interval={interval}: a number of steps >= 1")
        self.network = copy.deepcopy(nn.Sequential(feature_extractor, classifier))
        self.network.requires_grad_(False)
        self._norms = domain_norms(self.network)

    @torch.no_grad()
    def refresh_if_due(
        self, step: int, feature_extractor: nn.Module, classifier: nn.Module
    ) -> bool:
        """Copy the student's weights (and BatchNorm statistics) at every `interval`-th step."""
        if step % self.interval:
            return False
        self.network.load_state_dict(nn.Sequential(feature_extractor, classifier).state_dict())
        return True

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's logits for target inputs."""
        set_domains(self._norms, None, TARGET)
        with eval_mode(self.network):
            return self.network(x)
