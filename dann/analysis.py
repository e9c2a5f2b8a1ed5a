"""Measures of domain invariance: the proxy A-distance and t-SNE pictures of the features.

- `proxy_a_distance`: PAD = 2 (1 - 2 eps), eps the held-out error of a linear SVM told to
  separate source from target (Ben-David et al. 2007; Ganin et al., JMLR 2016, sec. 5.1.4).
  ~0 when the domains are indistinguishable, 2 when they are perfectly separable.
- `tsne_figure`: a 2-D t-SNE of source and target features, coloured by domain and by class.
- `extract`: features (and flattened inputs) of the validation sets from a model mid-training.

scikit-learn does the fitting, matplotlib (headless) the drawing.
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from lightning_utilities.core.apply_func import apply_to_collection  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.svm import LinearSVC  # noqa: E402

from dann.data.datamodule import DOMAINS  # noqa: E402

SVM_C = (1e-3, 1e-2, 1e-1, 1.0)
MIN_PAD_SAMPLES = 4  # two per domain on each side of the fit/eval split


def proxy_a_distance(source: np.ndarray, target: np.ndarray, seed: int = 0) -> float:
    """PAD between two samples (rows = examples): a linear SVM on one half of each, its error
    on the other half; the lowest error over a small grid of C, as in the paper."""
    if min(len(source), len(target)) < MIN_PAD_SAMPLES:
        raise ValueError(
            f"proxy A-distance needs at least {MIN_PAD_SAMPLES} examples per domain, "
            f"got {len(source)} source and {len(target)} target"
        )
    x = np.concatenate([source, target]).reshape(len(source) + len(target), -1)
    d = np.concatenate([np.zeros(len(source)), np.ones(len(target))])
    x_fit, x_eval, d_fit, d_eval = train_test_split(
        x, d, test_size=0.5, stratify=d, random_state=seed
    )

    def error(c: float) -> float:
        # the primal problem (dual=False): converges where liblinear's dual solver stops at
        # max_iter with a ConvergenceWarning (C=1 on 2,352 pixels), same errors, ~3x faster
        svm = make_pipeline(StandardScaler(), LinearSVC(C=c, dual=False, random_state=seed))
        return float(np.mean(svm.fit(x_fit, d_fit).predict(x_eval) != d_eval))

    return 2.0 * (1.0 - 2.0 * min(error(c) for c in SVM_C))


def tsne_figure(
    source: np.ndarray,
    source_labels: np.ndarray,
    target: np.ndarray,
    target_labels: np.ndarray,
    title: str = "",
    seed: int = 0,
) -> plt.Figure:
    """Two panels of one t-SNE embedding: by domain, and by class (o source, x target)."""
    n = len(source) + len(target)
    perplexity = min(30.0, n - 1.0)  # t-SNE needs perplexity < samples (small validation sets)
    xy = TSNE(2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(
        np.concatenate([source, target]).reshape(n, -1)
    )
    s, t = xy[: len(source)], xy[len(source) :]
    fig, (by_domain, by_class) = plt.subplots(1, 2, figsize=(10, 4.5))
    by_domain.scatter(*s.T, s=5, c="tab:blue", label="source")
    by_domain.scatter(*t.T, s=5, c="tab:red", label="target")
    by_domain.legend(loc="upper right")
    by_domain.set_title("by domain")
    style = {"cmap": "tab10", "vmin": 0, "vmax": 9, "s": 6}
    by_class.scatter(*s.T, c=source_labels % 10, marker="o", **style)
    by_class.scatter(*t.T, c=target_labels % 10, marker="x", **style)
    by_class.set_title("by class (o source, x target)")
    for ax in (by_domain, by_class):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _small(x: torch.Tensor, side: int = 32) -> torch.Tensor:
    """Images larger than 3 x 32 x 32 are average-pooled to 32 x 32 before a linear SVM sees
    them (224 x 224 photos would be 150k dimensions); digits pass unchanged."""
    if x.ndim == 4 and x[0].numel() > 3 * side * side:
        return torch.nn.functional.adaptive_avg_pool2d(x, side)
    return x


@torch.no_grad()
def extract(trainer, module, max_samples: int = 1000) -> dict[str, dict[str, np.ndarray]]:
    """Per domain: the first `max_samples` validation examples' flattened (normalised) inputs,
    features and labels, computed in eval mode (the module's mode is restored after).

    Leaves the global RNG state as it found it (a DataLoader iterator draws a seed from it), so
    turning analysis callbacks on or off does not change the training run."""
    cuda = [module.device] if module.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        return _extract(trainer, module, max_samples)


def _extract(trainer, module, max_samples: int) -> dict[str, dict[str, np.ndarray]]:
    datamodule = trainer.datamodule
    was_training = module.training
    module.eval()
    out = {}
    for idx, (domain, loader) in enumerate(zip(DOMAINS, datamodule.val_dataloader(), strict=True)):
        parts: dict[str, list] = {"inputs": [], "features": [], "labels": []}
        seen = 0
        for batch in loader:
            batch = apply_to_collection(batch, torch.Tensor, lambda t: t.to(module.device))
            x, y = datamodule.on_after_batch_transfer(batch, idx)
            parts["inputs"].append(_small(x).flatten(1).float().cpu())
            parts["features"].append(module.features(x, idx).flatten(1).float().cpu())
            parts["labels"].append(y.cpu())
            seen += len(y)
            if seen >= max_samples:
                break
        out[domain] = {k: torch.cat(v)[:max_samples].numpy() for k, v in parts.items()}
    module.train(was_training)
    return out
