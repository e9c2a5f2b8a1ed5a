"""Folder-based dataset pairs: `folder` (any two ImageFolders) and `synsigns_to_gtsrb`, and the
transductive protocol and transforms the benchmarks (dann/data/benchmarks.py: office31,
office_home, visda2017, domainnet) share.

All read class-subfolder images (the torchvision ImageFolder layout, `DIR/CLASS/*.jpg`). Both
domains must have the same class names; class index = position of the name in the sorted list,
so the same name has the same index in both domains. A mismatch is a ValueError listing the
classes found only in the source and only in the target; an empty class folder or a folder with
no class subfolders is a FileNotFoundError naming it. The folder pairs save the class
names in checkpoints (the pair's `preprocessing`): scripts/predict.py writes them, and a
checkpoint evaluated on new folders keeps its class indices. No data ships with these pairs:
`dataset.root` (or `source_root`/`target_root`) must point at user-supplied files.

`folder` (like the Office benchmarks) follows the standard, transductive protocol:
- source: all labelled images train the model, except 10% held out (fixed by `split_seed`) as
  source val; there is no separate source test set, so source test = that held-out 10%;
- target: ALL target images are the unlabelled training set AND the target val and test sets
  (their labels serve the oracle numbers only, never training or model selection).
Images are large, so splits are Datasets decoded by DataLoader workers. Train transform:
Resize(resize) + RandomResizedCrop(image_size) (or `train_crop`) + RandomHorizontalFlip; eval
transform: Resize(resize) + CenterCrop(image_size); both then ToTensor + Normalize(norm_mean,
norm_std), ImageNet statistics by default (pretrained backbones).

`synsigns_to_gtsrb` (JMLR 2016 section 5.2.4): SynSigns, 100k synthetic signs of 43 classes
(Moiseev et al. 2013), as `root/synsigns/CLASSID/*.png` -> GTSRB in torchvision's layout under
`root/gtsrb/`. Class folders are matched by integer id (`00007` == `7`). Small images: decoded
once, resized to `image_size` (40, the paper's GTSRB network input), held in memory as uint8 and
cached in `data_dir`, keyed by a digest of the file names, sizes, mtimes and labels. SynSigns
is split train / val / test by `split_seed`; GTSRB's Training set gives target train and val
(held out), its Final_Test set (labels from GT-final_test.csv) the target test set.
"""

import csv
import hashlib
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS

from dann.data.cache import cached_tensors
from dann.data.registry import (
    DomainData,
    PairData,
    PairSpec,
    Split,
    register_pair,
    split_indices,
    take,
    val_size,
)
from dann.errors import DataError, InvalidDataError

log = logging.getLogger(__name__)

SOURCE_VAL_FRACTION = 0.1  # of the source images, held out as source val (folder pairs)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SYNSIGNS_LAYOUT = (
    "ROOT/synsigns/CLASSID/*.png: the Synthetic Signs images (Moiseev et al. 2013; 100,000 "
    "images, 43 classes) sorted into one folder per class id, named 0..42 or 00000..00042, or "
    "the release as unzipped: ROOT/synthetic_data/train_labelling.txt and train/*.png"
)
GTSRB_LAYOUT = (
    "torchvision's GTSRB layout: ROOT/gtsrb/GTSRB/Training/000NN/*.ppm, "
    "ROOT/gtsrb/GTSRB/Final_Test/Images/*.ppm and ROOT/gtsrb/GT-final_test.csv (what "
    "torchvision.datasets.GTSRB(ROOT, split='train', download=True) and split='test' write; run "
    "both on a machine with internet and copy ROOT/gtsrb/)"
)
SIGNS_IMAGE_SIZE = 40  # the paper's GTSRB network input
SIGNS_CACHE_VERSION = 1


class ImageFiles(Dataset):
    """(image, label) pairs from image files, decoded as RGB by PIL, then `transform`ed."""

    def __init__(self, samples: list[tuple[str, int]], transform: Callable | None = None):
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        from PIL import Image

        path, label = self.samples[index]
        with Image.open(path) as img:
            image = img.convert("RGB")
        return (self.transform(image) if self.transform else image), label


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        f for f in folder.rglob("*") if f.suffix.lower() in IMG_EXTENSIONS and f.is_file()
    )


def list_image_folder(folder: Path) -> dict[str, list[Path]]:
    """Class name -> sorted image files of an ImageFolder (one subfolder of images per class)."""
    folder = Path(folder)
    layout = f"{folder}/CLASS/*.jpg (one subfolder of images per class)"
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist; expected {layout}")
    class_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{folder} has no class subfolders; expected {layout}")
    files = {d.name: _image_files(d) for d in class_dirs}
    empty = [str(folder / name) for name, paths in files.items() if not paths]
    if empty:
        raise DataError(
            f"empty class folder(s), no images ({', '.join(IMG_EXTENSIONS)}): {', '.join(empty)}. "
            f"Every class needs images in both domains: add images or remove the class from both."
        )
    return files


def match_classes(source: Iterable, target: Iterable, source_where, target_where) -> list:
    """The shared class names (or ids), sorted; their position is the class index."""
    src, tgt = set(source), set(target)
    if src != tgt:
        raise InvalidDataError(
            f"source and target classes differ: only in source ({source_where}): "
            f"{sorted(src - tgt)}; only in target ({target_where}): {sorted(tgt - src)}. "
            f"Both domains need the same class folders."
        )
    return sorted(src)


def trained_classes(classes: list, folders: Iterable[tuple[dict, Path]]) -> list:
    """A checkpoint's class names (given back as `options["preprocessing"]["classes"]`): each
    folder may hold some of them (evaluation on new folders); any other class folder is an
    error naming it."""
    classes = list(classes)
    for files, folder in folders:
        unknown = sorted(set(files) - set(classes))
        if unknown:
            raise InvalidDataError(
                f"{folder} has class folder(s) {unknown} the checkpoint was not trained with "
                f"(its classes: {classes})"
            )
    return classes


def _samples(files: dict, classes: list) -> list[tuple[str, int]]:
    index = {c: i for i, c in enumerate(classes)}
    return [(str(p), index[c]) for c in classes if c in files for p in files[c]]


# ---- office31 / folder: Dataset splits, transductive protocol --------------------------------


TRAIN_CROPS = ("random_resized", "center", "random")


def folder_transforms(spec: PairSpec) -> tuple[Callable, Callable]:
    """(train, eval) transforms from the dataset config: image_size, resize, norm_mean/std;
    `resize_square` (TLlib's ResizeImage: both sides to `resize`, else the shorter side) and
    `train_crop` (random_resized: RandomResizedCrop, the default; center: CenterCrop, TLlib's
    `cen.crop` for VisDA-2017; random: RandomCrop)."""
    from torchvision import transforms as T

    if spec.channels not in (None, 3):
        raise InvalidDataError(
            f"{spec.name} images are RGB: set dataset.channels=3 (got {spec.channels})"
        )
    size = spec.image_size or 224
    resize = spec.options.get("resize") or round(size * 256 / 224)
    if resize < size:
        raise InvalidDataError(f"dataset.resize={resize} must be >= dataset.image_size={size}")
    normalize = [
        T.ToTensor(),
        T.Normalize(
            list(spec.options.get("norm_mean") or IMAGENET_MEAN),
            list(spec.options.get("norm_std") or IMAGENET_STD),
        ),
    ]
    crop = spec.options.get("train_crop") or "random_resized"
    if crop not in TRAIN_CROPS:
        raise InvalidDataError(
            f"dataset.train_crop={crop!r}: choose one of {', '.join(TRAIN_CROPS)}"
        )
    cropping = {"random_resized": T.RandomResizedCrop, "center": T.CenterCrop}
    resizing = T.Resize((resize, resize) if spec.options.get("resize_square") else resize)
    train_crop = cropping.get(crop, T.RandomCrop)(size)
    train = T.Compose([resizing, train_crop, T.RandomHorizontalFlip(), *normalize])
    evaluate = T.Compose([resizing, T.CenterCrop(size), *normalize])
    return train, evaluate


def transductive_pair(
    source_dir: Path, target_dir: Path, names: tuple[str, str], spec: PairSpec
) -> PairData:
    """Source: train minus 10% held out as val (= test); target: all images in every split.
    The class names are the pair's `preprocessing` (saved in checkpoints: predict.py writes
    them); given back, they fix the class indices and the folders may hold a subset of them."""
    src_files, tgt_files = list_image_folder(source_dir), list_image_folder(target_dir)
    fitted = spec.options.get("preprocessing") or {}
    if fitted.get("classes") is not None:
        folders = ((src_files, source_dir), (tgt_files, target_dir))
        classes = trained_classes(fitted["classes"], folders)
    else:
        classes = match_classes(src_files, tgt_files, source_dir, target_dir)
    source, target = _samples(src_files, classes), _samples(tgt_files, classes)
    if len(source) < 2:
        raise InvalidDataError(
            f"{source_dir} has {len(source)} image; need 2+ to hold one out as val"
        )
    n_val = max(1, round(len(source) * SOURCE_VAL_FRACTION))
    rest, val, _ = split_indices(len(source), (n_val, 0), spec.split_seed)
    train_tf, eval_tf = folder_transforms(spec)
    source_val = ImageFiles([source[i] for i in val.tolist()], eval_tf)
    target_eval = ImageFiles(target, eval_tf)
    return PairData(
        source=DomainData(
            names[0],
            ImageFiles([source[i] for i in rest.tolist()], train_tf),
            source_val,
            source_val,
        ),
        target=DomainData(names[1], ImageFiles(target, train_tf), target_eval, target_eval),
        num_classes=len(classes),
        preprocessing={**fitted, "classes": classes},
    )


@register_pair("folder")
def load_folder_pair(spec: PairSpec) -> PairData:
    source_root, target_root = spec.options.get("source_root"), spec.options.get("target_root")
    if source_root is None or target_root is None:
        raise DataError(
            "the folder pair needs dataset.source_root=/path/to/source and "
            "dataset.target_root=/path/to/target, each an image folder DIR/CLASS/*.jpg with the "
            "same class folder names"
        )
    source_dir, target_dir = Path(source_root), Path(target_root)
    names = (source_dir.name or "source", target_dir.name or "target")
    return transductive_pair(source_dir, target_dir, names, spec)


# ---- synsigns_to_gtsrb: decoded once, in memory, cached --------------------------------------


def by_class_id(files: dict[str, list[Path]], folder: Path) -> dict[int, list[Path]]:
    """Class folders named by integer id (`00007` or `7`) -> {7: files}."""
    out: dict[int, list[Path]] = {}
    for name, paths in files.items():
        if not name.isdigit():
            raise InvalidDataError(
                f"class folder {folder / name} is not a class id; expected folders named by "
                f"integer class id (0..42 or 00000..00042)"
            )
        if int(name) in out:
            raise InvalidDataError(f"class id {int(name)} appears twice in {folder}")
        out[int(name)] = paths
    return out


def decode_resized(paths: list[str], size: int) -> torch.Tensor:
    """uint8 (N, 3, size, size): each image as RGB, resized with PIL's (antialiased) bilinear."""
    from PIL import Image

    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    for i, path in enumerate(paths):
        with Image.open(path) as img:
            rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        out[i] = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)
    return out


def listing_digest(samples: list[tuple[str, int]], base: Path) -> str:
    """Relative names, sizes, mtimes and labels: a changed file or label invalidates the cache."""
    h = hashlib.sha256()
    for path, label in samples:
        st = Path(path).stat()
        rel = Path(path).relative_to(base).as_posix()
        h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns}:{label}\n".encode())
    return h.hexdigest()


def cached_images(name: str, samples: list[tuple[str, int]], base: Path, spec: PairSpec) -> Split:
    size = spec.image_size or SIGNS_IMAGE_SIZE
    digest = listing_digest(samples, base)
    meta = {"files_sha256": digest, "image_size": size, "version": SIGNS_CACHE_VERSION}

    def build() -> dict[str, torch.Tensor]:
        log.info("Decoding %d %s images to %dx%d (once; cached)", len(samples), name, size, size)
        return {
            "images": decode_resized([p for p, _ in samples], size),
            "labels": torch.tensor([y for _, y in samples], dtype=torch.long),
        }

    path = Path(spec.data_dir) / f"{name}_{digest[:12]}_{size}px.pt"
    tensors = cached_tensors(path, meta, build)
    return Split(tensors["images"], tensors["labels"])


def synsigns_from_labelling(labelling: Path) -> dict[int, list[Path]]:
    """The release's own layout: `train_labelling.txt` lines `train/00000.png CLASSID ...`,
    paths relative to its folder -> {class id: files}."""
    out: dict[int, list[Path]] = {}
    for number, line in enumerate(labelling.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2 or not fields[1].isdigit():
            raise InvalidDataError(
                f"{labelling}, line {number}: {line!r} is not 'IMAGE CLASSID ...' (SynSigns' "
                f"train_labelling.txt)"
            )
        out.setdefault(int(fields[1]), []).append(labelling.parent / fields[0])
    missing = [str(p) for paths in out.values() for p in paths if not p.is_file()]
    if missing or not out:
        raise DataError(
            f"{labelling} lists {len(missing)} image(s) that are not there (e.g. "
            f"{missing[:1]}): unzip the whole synthetic_data.zip in {labelling.parent.parent}"
            if missing
            else f"{labelling} lists no images"
        )
    return {c: sorted(out[c]) for c in sorted(out)}


def _gtsrb_test_rows(csv_file: Path, images: Path) -> list[tuple[Path, int]]:
    with open(csv_file, newline="") as f:
        rows = list(csv.DictReader(f, delimiter=";", skipinitialspace=True))
    try:
        return [(images / r["Filename"], int(r["ClassId"])) for r in rows]
    except (KeyError, ValueError, TypeError) as e:
        raise InvalidDataError(
            f"{csv_file} is not GTSRB's test annotation file ({type(e).__name__}: {e}); expected "
            f"';'-separated columns including Filename and ClassId (GT-final_test.csv)"
        ) from e


@register_pair("synsigns_to_gtsrb")
def load_synsigns_to_gtsrb(spec: PairSpec) -> PairData:
    if spec.root is None:
        raise DataError(
            f"synsigns_to_gtsrb has no embedded data: pass dataset.root=/path holding "
            f"{SYNSIGNS_LAYOUT.replace('ROOT', '/path')}, and GTSRB in "
            f"{GTSRB_LAYOUT.replace('ROOT', '/path')}"
        )
    root = Path(spec.root)
    synsigns_dir = root / "synsigns"
    gtsrb = root / "gtsrb"
    train_dir = gtsrb / "GTSRB" / "Training"
    test_dir, test_csv = gtsrb / "GTSRB" / "Final_Test" / "Images", gtsrb / "GT-final_test.csv"
    labelling = root / "synthetic_data" / "train_labelling.txt"  # the release as unzipped
    if not synsigns_dir.is_dir() and not labelling.is_file():
        raise DataError(
            f"{synsigns_dir} not found; expected {SYNSIGNS_LAYOUT.replace('ROOT', str(root))}; "
            f"or add dataset.download=true to fetch it"
        )
    missing = [str(p) for p in (train_dir, test_dir, test_csv) if not p.exists()]
    if missing:
        raise DataError(
            f"GTSRB not found: missing {', '.join(missing)}; expected "
            f"{GTSRB_LAYOUT.replace('ROOT', str(root))}"
        )

    if synsigns_dir.is_dir():
        synsigns = by_class_id(list_image_folder(synsigns_dir), synsigns_dir)
    else:
        synsigns_dir = labelling.parent
        synsigns = synsigns_from_labelling(labelling)
    gtsrb_train = by_class_id(list_image_folder(train_dir), train_dir)
    classes = match_classes(synsigns, gtsrb_train, synsigns_dir, train_dir)
    index = {c: i for i, c in enumerate(classes)}
    test_rows = _gtsrb_test_rows(test_csv, test_dir)
    unknown = sorted({c for _, c in test_rows} - set(classes))
    if unknown:
        raise InvalidDataError(f"{test_csv} has ClassId {unknown} not among the training classes")

    source = cached_images("synsigns", _samples(synsigns, classes), root, spec)
    train, val, test = split_indices(len(source), (val_size(len(source)),) * 2, spec.split_seed)
    target = cached_images("gtsrb_train", _samples(gtsrb_train, classes), root, spec)
    rest, held_out, _ = split_indices(len(target), (val_size(len(target)), 0), spec.split_seed)
    target_test = [(str(p), index[c]) for p, c in test_rows]
    return PairData(
        source=DomainData("synsigns", take(source, train), take(source, val), take(source, test)),
        target=DomainData(
            "gtsrb",
            train=take(target, rest),
            val=take(target, held_out),
            test=cached_images("gtsrb_test", target_test, root, spec),
        ),
        num_classes=len(classes),
    )
