"""MNIST-M (Ganin & Lempitsky 2015) and the `mnist_to_mnistm` pair.

MNIST-M blends each MNIST digit over a random colour patch: out = |patch - digit| per channel.
- Official release: `dataset.root=/path` holding `/path/mnist_m/mnist_m_{train,test}/*.png` and
  `/path/mnist_m/mnist_m_{train,test}_labels.txt` (lines "00000000.png 5").
- Otherwise generated from the MNIST digits in use, with patches cut from the BSDS500 training
  photographs when `/path/BSR/BSDS500/data/images/train/*.jpg` exist (the paper's recipe;
  `dataset.download=true` fetches them), else from the colour photographs shipped in
  scikit-image and scikit-learn; deterministic for `split_seed` and the photographs, cached with
  a checksum in `paths.data_dir`.
"""

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch

from dann.data.cache import cached_tensors
from dann.data.mnist import embedded_mnist_note, load_mnist_embedded, load_mnist_full
from dann.data.registry import (
    DomainData,
    PairData,
    PairSpec,
    Split,
    hold_out_val,
    register_pair,
)
from dann.errors import DataError

log = logging.getLogger(__name__)

SKIMAGE_PHOTOS = ["astronaut", "chelsea", "coffee", "rocket"]
SKLEARN_PHOTOS = ["china.jpg", "flower.jpg"]
GENERATOR_VERSION = 1


def background_photos() -> list[np.ndarray]:
    """The colour photographs shipped inside scikit-image and scikit-learn (uint8, H x W x 3)."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = [getattr(skimage.data, name)() for name in SKIMAGE_PHOTOS]
    samples = load_sample_images()
    by_name = {Path(f).name: img for f, img in zip(samples.filenames, samples.images, strict=True)}
    photos += [by_name[name] for name in SKLEARN_PHOTOS]
    return [np.ascontiguousarray(p[..., :3]) for p in photos]


BSDS500_TRAIN = Path("BSR") / "BSDS500" / "data" / "images" / "train"


def bsds500_photos(root: str | Path) -> list[np.ndarray] | None:
    """The BSDS500 training photographs under `root` (sorted by name), or None if absent."""
    from PIL import Image

    folder = Path(root) / BSDS500_TRAIN
    files = sorted(folder.glob("*.jpg")) if folder.is_dir() else []
    if not files:
        return None
    return [np.asarray(Image.open(f).convert("RGB")) for f in files]


def blend_with_photos(digits: torch.Tensor, photos: list[np.ndarray], seed: int) -> torch.Tensor:
    """|patch - digit| for each digit (uint8 N x 1 x H x W) with a random patch of a random photo;
    returns uint8 N x 3 x H x W. Vectorised per photo; deterministic for `seed`."""
    n, _, h, w = digits.shape
    rng = np.random.default_rng(seed)
    which = rng.integers(len(photos), size=n)
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    digit = digits.numpy()[:, 0, :, :, None].astype(np.int16)
    for k, photo in enumerate(photos):
        idx = np.flatnonzero(which == k)
        ys = rng.integers(photo.shape[0] - h + 1, size=len(idx))
        xs = rng.integers(photo.shape[1] - w + 1, size=len(idx))
        windows = np.lib.stride_tricks.sliding_window_view(photo, (h, w, 3))
        patches = windows[ys, xs, 0].astype(np.int16)  # (len(idx), h, w, 3)
        out[idx] = np.abs(patches - digit[idx]).astype(np.uint8)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def generate_mnistm(
    mnist: DomainData, data_dir: Path, seed: int, photos: list[np.ndarray] | None = None
) -> DomainData:
    """MNIST-M from `mnist`'s digits and patches of `photos` (default: the package's six)."""
    splits = {"train": mnist.train, "val": mnist.val, "test": mnist.test}
    digest = hashlib.sha256()
    for s in splits.values():
        digest.update(s.inputs.numpy().tobytes())
    photos = photos if photos is not None else background_photos()
    photo_digest = hashlib.sha256(b"".join(p.tobytes() for p in photos)).hexdigest()
    meta = {
        "digits_sha256": digest.hexdigest(),
        "photos_sha256": photo_digest,
        "seed": seed,
        "version": GENERATOR_VERSION,
    }

    def build() -> dict[str, torch.Tensor]:
        return {
            k: blend_with_photos(s.inputs, photos, seed + i)
            for i, (k, s) in enumerate(splits.items())
        }

    key = f"{meta['digits_sha256'][:12]}_{photo_digest[:8]}_seed{seed}"
    path = Path(data_dir) / f"mnistm_generated_{key}.pt"
    images = cached_tensors(path, meta, build)
    return DomainData(
        name=f"{mnist.name}-m-generated",
        **{k: Split(images[k], s.labels) for k, s in splits.items()},
    )


def _read_png_split(folder: Path, labels_file: Path) -> dict[str, torch.Tensor]:
    from PIL import Image

    names, labels = [], []
    for line in labels_file.read_text().split("\n"):
        if line.strip():
            name, label = line.split()
            names.append(name)
            labels.append(int(label))
    images = np.stack([np.asarray(Image.open(folder / n).convert("RGB")) for n in names])
    return {
        "images": torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        "labels": torch.tensor(labels, dtype=torch.long),
    }


def _listing_digest(folder: Path) -> str:
    """Names, sizes and modification times of the PNGs: a changed file invalidates the cache."""
    h = hashlib.sha256()
    for f in sorted(folder.glob("*.png")):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def load_mnistm_official(root: str, data_dir: Path, split_seed: int) -> DomainData | None:
    base = Path(root) / "mnist_m"
    if not base.is_dir():
        return None
    parts = {}
    for split in ("train", "test"):
        folder, labels_file = base / f"mnist_m_{split}", base / f"mnist_m_{split}_labels.txt"
        if not folder.is_dir() or not labels_file.is_file():
            raise DataError(
                f"{base} exists but {folder.name}/ or {labels_file.name} is missing: expected the "
                f"official MNIST-M release layout mnist_m/mnist_m_{{train,test}}/*.png plus "
                f"mnist_m_{{train,test}}_labels.txt."
            )
        meta = {
            "labels_sha256": hashlib.sha256(labels_file.read_bytes()).hexdigest(),
            "files_sha256": _listing_digest(folder),
        }
        key = meta["labels_sha256"][:12]
        parts[split] = cached_tensors(
            Path(data_dir) / f"mnistm_official_{split}_{key}.pt",
            meta,
            lambda f=folder, lf=labels_file: _read_png_split(f, lf),
        )
    train, test = (Split(parts[k]["images"], parts[k]["labels"]) for k in ("train", "test"))
    return hold_out_val("mnist-m", train, test, split_seed)


@register_pair("mnist_to_mnistm")
def load_mnist_to_mnistm(spec: PairSpec) -> PairData:
    root, data_dir, split_seed = spec.root, spec.data_dir, spec.split_seed
    if root is None:
        mnist = load_mnist_embedded(data_dir, split_seed)
        mnistm = generate_mnistm(mnist, data_dir, split_seed)
        log.warning(
            "EMBEDDED DATA: source = %s; target = MNIST-M generated from them with patches of "
            "%d photos shipped in scikit-image/scikit-learn (not BSDS500). For the full datasets "
            "pass dataset.root=/path with /path/MNIST/raw/*-ubyte (torchvision layout) and "
            "optionally /path/mnist_m/ (official MNIST-M release).",
            embedded_mnist_note(mnist),
            len(SKIMAGE_PHOTOS + SKLEARN_PHOTOS),
        )
        return PairData(source=mnist, target=mnistm, num_classes=10)
    mnist = load_mnist_full(root, split_seed)
    mnistm = load_mnistm_official(root, data_dir, split_seed)
    if mnistm is None:
        photos = bsds500_photos(root)
        mnistm = generate_mnistm(mnist, data_dir, split_seed, photos)
        if photos is not None:
            log.warning(
                "GENERATED TARGET: no %s/mnist_m/ found, so MNIST-M is generated from the real "
                "MNIST with patches of the %d BSDS500 training photographs in %s (the paper's "
                "recipe; not the official release's images).",
                root,
                len(photos),
                Path(root) / BSDS500_TRAIN,
            )
        else:
            log.warning(
                "GENERATED TARGET: no %s/mnist_m/ found, so MNIST-M is generated from the real "
                "MNIST with patches of photos shipped in scikit-image/scikit-learn (not BSDS500). "
                "Put the official MNIST-M release in %s/mnist_m/, or BSDS500 in %s/BSR/ "
                "(dataset.download=true fetches it), to use them.",
                root,
                root,
                root,
            )
    return PairData(source=mnist, target=mnistm, num_classes=10)
