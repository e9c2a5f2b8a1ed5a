"""VADA (Shu, Bui, Narui, Ermon, ICLR 2018, "A DIRT-T Approach to Unsupervised Domain
Adaptation"): DANN's domain adversary, plus the conditional entropy of the target predictions
and virtual adversarial training (VAT) on source and target inputs, which keep the decision
boundary away from dense target regions. The entropy and VAT terms are the shared
`dann.losses` terms, brought with VADA's weights (`loss_terms`); `loss.vat_source=...` etc.
override them.

Reference code: RuiShu/dirt-t (`codebase/models/dirtt.py`, `run_dirtt.py`): domain weight
1e-2, source VAT weight 1, target weight 1e-2 (entropy and VAT alike), VAT radius 3.5.
Departures:
- the adversary is the GRL's minimax game (the features get -lambda * `domain_weight` times the
  discriminator's gradient; the discriminator learns at full strength), where the reference
  trains the features with the flipped-label (non-saturating) GAN loss; lambda follows the
  `schedule` group (the paper's sigmoid warm-up by default) where the reference's weight is
  constant (`schedule=constant schedule.value=1` for that);
- network, optimiser and evaluation follow the run's config: the reference uses its own conv
  nets with instance-normalised inputs, Adam (lr 1e-3, beta1 0.5) and an EMA of the weights
  (0.998) for evaluation (`optimizer.ema_decay=0.998` here);
- VAT perturbs the normalised inputs the network sees (radius 3.5 is relative to the
  reference's instance-normalised images; for other scalings `loss.vat_radius` may need to
  follow);
- DIRT-T's refinement stage (a teacher and its KL term on the target) is its own method,
  `method=dirt_t` (dann/methods/dirt_t.py), run from a VADA checkpoint with `init_from=`.
"""

from dann.methods.dann import DANN


class VADA(DANN):
    uses_target_logits = True  # the entropy and VAT terms read the target predictions

    def __init__(
        self,
        *args,
        domain_weight: float = 1e-2,
        source_vat: float = 1.0,
        target_weight: float = 1e-2,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.domain_weight = float(domain_weight)
        self._terms = {
            "target_entropy": float(target_weight),
            "vat_target": float(target_weight),
            "vat_source": float(source_vat),
        }

    def loss_terms(self) -> dict[str, float]:
        return dict(self._terms)

    def reverse(self, features, lambda_):
        return super().reverse(features, lambda_ * self.domain_weight)
