"""BSP (Chen, Wang, Long, Wang, ICML 2019, "Transferability vs. Discriminability: Batch Spectral
Penalization for Adversarial Domain Adaptation") on DANN: the DANN domain loss behind the GRL,
plus the squared largest singular values of the source and of the target feature batches,
which the paper finds adversarial training inflates at the cost of discriminability. The penalty
is `dann.losses.batch_spectral_penalty` (the same one `loss.bsp=<weight>` adds to any method,
e.g. `method=cdan loss.bsp=1e-4` for the paper's CDAN+BSP).

Reference code: thuml/Batch-Spectral-Penalization and tllib `tllib/alignment/bsp.py` (k = 1,
trade-off 1e-4). Departures: the penalty acts on the feature extractor's output (the reference's
ResNet runs put it on a bottleneck layer, here part of `backbone`); its weight is constant (not
multiplied by lambda), as in the reference, while lambda drives the GRL as in DANN.
"""

from dann.losses import batch_spectral_penalty
from dann.methods.base import AdaptationOutput
from dann.methods.dann import DANN


class BSP(DANN):
    def __init__(self, *args, bsp_weight: float = 1e-4, bsp_k: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.bsp_weight, self.bsp_k = float(bsp_weight), int(bsp_k)

    def forward(self, features, logits, num_source, lambda_) -> AdaptationOutput:
        out = super().forward(features, logits, num_source, lambda_)
        source, target = features[:num_source], features[num_source:]
        penalty = batch_spectral_penalty(source, self.bsp_k)
        penalty = penalty + batch_spectral_penalty(target, self.bsp_k)
        out.losses["bsp"] = self.bsp_weight * penalty
        return out
