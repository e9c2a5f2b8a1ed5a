"""Unsupervised model-selection scores: how good is a model on the target, without target labels.

Pure functions of features, logits and *source* labels (NumPy/torch in, float out):

- `reverse_validation_acc` (Ganin et al., JMLR 2016, sec. 5.1.2): pseudo-label the target with
  the current model, train a reverse classifier target -> source, score it on labelled source
  validation data. Higher is better. The paper trains the reverse classifier with the whole
  adaptation algorithm; here it is a logistic regression on the model's frozen features, cheap
  enough to run every validation epoch (the same idea as tllib's and pytorch-adapt's variants).
- `dev_risk` (You et al., ICML 2019, "Towards Accurate Model Selection in Deep Unsupervised
  Domain Adaptation"): importance-weighted source validation loss, weights from a domain
  classifier on the features, with the paper's control variate. Lower is better.
- `prediction_entropy` (mean entropy of target predictions). Lower is better.
- `information_maximization` (IM: entropy of the mean target prediction minus the mean entropy
  of the target predictions, the objective of Shi & Sha 2012 / SHOT, used as a validator by
  Musgrave et al. 2022). Higher is better.
- `batch_nuclear_norm` (BNM, Cui et al., CVPR 2020: the nuclear norm of the target prediction
  matrix over sqrt(n * classes), high when predictions are confident *and* diverse). Higher is
  better.
- `class_ami` (ClassAMI, Musgrave et al., 2022: adjusted mutual information between k-means
  clusters of the source+target features, k = classes, and the model's predicted classes).
  Higher is better.
- `within_one_standard_error`: the rule "the latest epoch whose source validation accuracy is
  within one binomial standard error of the best so far" (a validation set of a few hundred
  images cannot rank epochs that differ by one image, so among those it cannot tell apart the
  latest, most adapted, one is taken). Logged per epoch as the training step when the epoch
  qualifies, -1 otherwise, so a checkpoint that keeps the maximum keeps exactly that epoch.
- `soft_neighborhood_density` (Saito et al., ICCV 2021, SND). Higher is better. Logged and in
  the end-of-run report, but NOT offered for checkpoint selection: near-uniform predictions
  (an untrained or collapsed model) make every target point every other's neighbour, which is
  SND's maximum; in every MNIST -> MNIST-M run we measured it picked the first epoch (README,
  "What label-free selection costs").

The domain and reverse classifiers are scikit-learn logistic regressions on standardised
features; every function is deterministic for a given `seed`.
"""

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_mutual_info_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

# name -> (logged metric, mode): reported at the end of a run; `selection=` picks among those
# not in NOT_SELECTABLE
VALIDATORS = {
    "source_val_1se": ("val/source_1se_step", "max"),
    "source_val": ("val/source_acc", "max"),
    "reverse_val": ("val/reverse_acc", "max"),
    "dev": ("val/dev_risk", "min"),
    "entropy": ("val/entropy", "min"),
    "im": ("val/im", "max"),
    "bnm": ("val/bnm", "max"),
    "class_ami": ("val/class_ami", "max"),
    "last": ("val/step", "max"),
    "snd": ("val/snd", "max"),
    "target_oracle": ("val/target_acc", "max"),  # uses target labels: an upper bound only
}
# validators that are rules over the run's epochs, not scores of a model (no correlation to rank)
RULES = {"source_val_1se", "last"}
NOT_SELECTABLE = {
    "val/snd": "SND scores near-uniform predictions highest and picks the first epochs "
    "(README, What label-free selection costs)",
}

# DEV's cross-fitted, cross-validated domain classifier needs a few examples of each domain
MIN_DEV_SAMPLES = 12


def _logistic(seed: int):
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, random_state=seed))


def _calibrated_logistic(x: np.ndarray, y: np.ndarray):
    """A logistic regression whose regularisation is picked by cross-validated log-loss: a
    density ratio needs calibrated probabilities, and an overfit classifier gives weights of
    1e6 on high-dimensional features."""

    def model(c: float):
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=300))

    def score(c: float) -> float:
        return cross_val_score(model(c), x, y, cv=3, scoring="neg_log_loss").mean()

    return model(max((1e-3, 1e-2, 1e-1, 1.0), key=score)).fit(x, y)


def reverse_validation_acc(
    source_features: np.ndarray,
    source_labels: np.ndarray,
    target_features: np.ndarray,
    target_pseudo_labels: np.ndarray,
    seed: int = 0,
) -> float:
    """Accuracy on the labelled source of a classifier trained on pseudo-labelled target."""
    classes = np.unique(target_pseudo_labels)
    if len(classes) == 1:  # a collapsed model: the reverse classifier predicts that one class
        return float(np.mean(source_labels == classes[0]))
    reverse = _logistic(seed).fit(target_features, target_pseudo_labels)
    return float(np.mean(reverse.predict(source_features) == source_labels))


def target_density_ratio(
    source_features: np.ndarray, target_features: np.ndarray, seed: int = 0, folds: int = 2
) -> np.ndarray:
    """w(x) = p_target(x) / p_source(x) at each source point, from a domain classifier.

    Cross-fitted: each source point is weighted by a classifier that did not see it."""
    x = np.concatenate([source_features, target_features])
    d = np.concatenate([np.zeros(len(source_features)), np.ones(len(target_features))])
    p_target = np.empty(len(x))
    for fit_idx, out_idx in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, d):
        domain_classifier = _calibrated_logistic(x[fit_idx], d[fit_idx])
        p_target[out_idx] = domain_classifier.predict_proba(x[out_idx])[:, 1]
    p = np.clip(p_target[: len(source_features)], 1e-6, 1 - 1e-6)
    return p / (1 - p) * len(source_features) / len(target_features)


def dev_risk(
    source_features: np.ndarray,
    source_losses: np.ndarray,
    target_features: np.ndarray,
    seed: int = 0,
) -> float:
    """Deep Embedded Validation: an estimate of the target risk (lower is better); NaN when a
    domain has fewer than `MIN_DEV_SAMPLES` examples (too few to fit the density ratio)."""
    if min(len(source_features), len(target_features)) < MIN_DEV_SAMPLES:
        return float("nan")
    w = target_density_ratio(source_features, target_features, seed)
    weighted = w * source_losses
    var_w = np.var(w, ddof=1)
    eta = -np.cov(weighted, w)[0, 1] / var_w if var_w > 0 else 0.0
    return float(np.mean(weighted) + eta * np.mean(w) - eta)


def prediction_entropy(logits: torch.Tensor) -> float:
    """Mean Shannon entropy (nats) of the softmax predictions (lower: more confident)."""
    log_p = F.log_softmax(logits.float(), dim=1)
    return float(-(log_p.exp() * log_p).sum(1).mean())


def information_maximization(logits: torch.Tensor) -> float:
    """IM: H(mean prediction) - mean H(prediction), in nats (higher: confident and diverse)."""
    log_p = F.log_softmax(logits.float(), dim=1)
    p = log_p.exp()
    mean_p = p.mean(0)
    marginal_entropy = -(mean_p * mean_p.clamp_min(1e-12).log()).sum()
    return float(marginal_entropy + (p * log_p).sum(1).mean())


def batch_nuclear_norm(logits: torch.Tensor) -> float:
    """BNM: nuclear norm of the (n, classes) softmax matrix over sqrt(n * classes), in [0, 1]
    (1: one-hot predictions spread evenly over the classes)."""
    p = F.softmax(logits.float(), dim=1)
    return float(torch.linalg.matrix_norm(p, ord="nuc") / (p.shape[0] * p.shape[1]) ** 0.5)


def class_ami(
    features: np.ndarray, predicted: np.ndarray, num_classes: int, seed: int = 0
) -> float:
    """ClassAMI: adjusted mutual information between k-means clusters of `features` (k =
    `num_classes`) and the predicted classes of the same points."""
    if len(features) <= num_classes:
        return float("nan")
    clusters = KMeans(num_classes, n_init=1, random_state=seed).fit_predict(
        StandardScaler().fit_transform(features)
    )
    return float(adjusted_mutual_info_score(predicted, clusters))


def picked_epoch(history: list[dict], metric: str, mode: str) -> dict | None:
    """The history entry (one per validation epoch) a validator picks: the best finite `metric`
    ("max" or "min"), the first of equal scores as ModelCheckpoint keeps it; None if none."""
    scored = [h for h in history if np.isfinite(h.get(metric, np.nan))]
    if not scored:
        return None
    return (max if mode == "max" else min)(scored, key=lambda h: h[metric])


def within_one_standard_error(acc: float, best_acc: float, n: int) -> bool:
    """Is accuracy `acc` within one binomial standard error (of `best_acc` over `n` examples) of
    `best_acc`?"""
    return acc >= best_acc - (best_acc * (1 - best_acc) / max(n, 1)) ** 0.5


def soft_neighborhood_density(logits: torch.Tensor, temperature: float = 0.05) -> float:
    """SND: entropy of each target point's soft neighbourhood in prediction space.

    High when predictions form dense clusters of similar points (higher is better)."""
    p = F.normalize(F.softmax(logits.float(), dim=1), dim=1)
    sim = p @ p.T
    sim.fill_diagonal_(float("-inf"))  # a point is not its own neighbour
    log_q = F.log_softmax(sim / temperature, dim=1)
    q = log_q.exp()
    return float(-(q * log_q.nan_to_num(neginf=0.0)).sum(1).mean())
