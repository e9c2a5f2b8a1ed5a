"""The object-recognition benchmarks of the domain-adaptation literature, read from their official
layouts (and TLlib's re-packs of them): `office31`, `office_home`, `visda2017`, `domainnet`.
No images ship with them: `dataset.root` points at the files, or `dataset.download=true` fetches
and checks them (dann/data/benchmark_sources.py). Domains are chosen by `dataset.source` and
`dataset.target`, by name or by the short codes papers use (A, W, D; Ar, Cl, Pr, Rw; c, i, p,
q, r, s).

Protocols (those of DANN, CDAN and TLlib):
- Office-31, Office-Home, VisDA-2017: transductive (dann/data/folders.py, `transductive_pair`):
  the source's labelled images train (10% held out as source val = test); ALL target images are
  the unlabelled training set and the target val and test sets. VisDA-2017: source = `train`
  (152,397 synthetic renderings), target = `validation` (55,388 real photos), 12 classes,
  reported as the mean of per-class accuracies (`dataset.class_mean_accuracy`).
- DomainNet: the official split lists (`DOMAIN_train.txt` / `DOMAIN_test.txt`, or TLlib's
  `image_list/DOMAIN_{train,test}.txt`): source train list minus `val_size` images held out as
  source val, source test list; target train list unlabelled for training, `val_size` of it as
  target val, the target test list as target test. 345 classes, labels as in the lists.
Class indices: the sorted class folder names (the same name, the same index in both domains);
DomainNet's from its lists. The class names are saved in checkpoints (predict.py writes them).
"""

from pathlib import Path

from dann.data.benchmark_sources import DOMAINNET_COUNTS
from dann.data.folders import ImageFiles, folder_transforms, transductive_pair
from dann.data.registry import (
    DomainData,
    PairData,
    PairSpec,
    register_pair,
    split_indices,
    val_size,
)
from dann.errors import DataError, InvalidDataError

# name -> (folder spellings, short codes)
OFFICE31 = {"amazon": ("A",), "dslr": ("D",), "webcam": ("W",)}
OFFICE_HOME = {"Art": ("Ar", "A"), "Clipart": ("Cl", "C"), "Product": ("Pr", "P")}
OFFICE_HOME["Real_World"] = ("Rw", "R", "Real World")
SPELLINGS = {"Real_World": ("Real World",)}  # the official release's folder name
VISDA2017 = {"train": ("Synthetic", "syn"), "validation": ("Real",)}
DOMAINNET = {d: (d[0],) for d in DOMAINNET_COUNTS}

LAYOUTS = {
    "office31": "ROOT/{amazon,dslr,webcam}/images/CLASS/*.jpg (the official release, "
    "domain_adaptation_images.tar.gz, unpacked) or ROOT/{amazon,dslr,webcam}/CLASS/*.jpg",
    "office_home": "ROOT/{Art,Clipart,Product,Real World}/CLASS/*.jpg (the official "
    "OfficeHomeDataset_10072016.zip unpacked; TLlib's Real_World spelling works too)",
    "visda2017": "ROOT/train/CLASS/*.png and ROOT/validation/CLASS/*.jpg (the VisDA-2017 "
    "classification track's train.tar and validation.tar, unpacked)",
    "domainnet": "ROOT/DOMAIN/CLASS/*.jpg with ROOT/DOMAIN_train.txt and ROOT/DOMAIN_test.txt "
    "(the official release and split lists) or ROOT/image_list/DOMAIN_{train,test}.txt (TLlib's)",
}
# where under dataset.root the files may sit (the download puts them in the first subfolder)
SUBFOLDERS = {
    "office31": ("office31",),
    "office_home": ("office_home", "OfficeHomeDataset_10072016", "office-home"),
    "visda2017": ("visda2017", "visda-2017"),
    "domainnet": ("domainnet", "DomainNet"),
}


def domain_name(pair: str, domains: dict, given: str) -> str:
    """The canonical name of a domain given by name or short code (case-insensitive)."""
    for name, aliases in domains.items():
        if given.lower() in {a.lower() for a in (name, *aliases)}:
            return name
    choices = ", ".join(f"{n} ({'/'.join(a)})" for n, a in domains.items())
    raise InvalidDataError(f"unknown {pair} domain {given!r}; valid choices: {choices}")


def chosen_domains(spec: PairSpec, domains: dict, defaults: tuple[str, str]) -> tuple[str, str]:
    source = domain_name(spec.name, domains, str(spec.options.get("source") or defaults[0]))
    target = domain_name(spec.name, domains, str(spec.options.get("target") or defaults[1]))
    if source == target:
        raise InvalidDataError(
            f"dataset.source and dataset.target are both {source!r}; pick two of "
            f"{', '.join(domains)}"
        )
    return source, target


def dataset_root(spec: PairSpec) -> Path:
    if spec.root is None:
        raise DataError(
            f"{spec.name} has no embedded data: pass dataset.root=/path with "
            f"{LAYOUTS[spec.name]}, or add dataset.download=true with dataset.root=/path to "
            "fetch and check it"
        )
    return Path(spec.root)


def bases(spec: PairSpec) -> list[Path]:
    """dataset.root, then its subfolders where this benchmark's files may sit."""
    root = dataset_root(spec)
    return [root, *(root / sub for sub in SUBFOLDERS[spec.name])]


def find_folder(spec: PairSpec, spellings: tuple[str, ...], inner: str = "") -> Path:
    """The first ROOT[/SUBFOLDER]/SPELLING[/inner] that exists (`inner`, e.g. Office-31's
    `images`, only where present)."""
    root = dataset_root(spec)
    for base in bases(spec):
        for spelling in spellings:
            folder = base / spelling
            if folder.is_dir():
                return folder / inner if inner and (folder / inner).is_dir() else folder
    raise DataError(
        f"{spec.name} domain folder {spellings[0]!r} not found under {root}; expected "
        f"{LAYOUTS[spec.name].replace('ROOT', str(root))}; or add dataset.download=true to "
        "fetch and check it"
    )


def _folder_pair(spec: PairSpec, domains: dict, defaults: tuple, inner: str = "") -> PairData:
    names = chosen_domains(spec, domains, defaults)
    folders = [find_folder(spec, (name, *SPELLINGS.get(name, ())), inner) for name in names]
    return transductive_pair(folders[0], folders[1], names, spec)


@register_pair("office31")
def load_office31(spec: PairSpec) -> PairData:
    return _folder_pair(spec, OFFICE31, ("amazon", "webcam"), inner="images")


@register_pair("office_home")
def load_office_home(spec: PairSpec) -> PairData:
    return _folder_pair(spec, OFFICE_HOME, ("Art", "Clipart"))


@register_pair("visda2017")
def load_visda2017(spec: PairSpec) -> PairData:
    return _folder_pair(spec, VISDA2017, ("train", "validation"))


# ---- DomainNet: the official split lists ------------------------------------------------------


def read_image_list(path: Path, base: Path) -> list[tuple[str, int]]:
    """`relative/path.jpg LABEL` lines (the path may hold spaces) -> [(base/path, label)];
    every listed image must exist."""
    samples = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        *parts, label = line.split()
        if not parts or not label.isdigit():
            raise InvalidDataError(f"{path}, line {number}: {line!r} is not 'IMAGE LABEL'")
        samples.append((str(base / " ".join(parts)), int(label)))
    if not samples:
        raise InvalidDataError(f"{path} lists no image")
    missing = [p for p, _ in samples if not Path(p).is_file()]
    if missing:
        raise DataError(
            f"{path} lists {len(missing):,} image(s) that are not under {base} (e.g. "
            f"{missing[0]}): unpack the domain's images next to its lists"
        )
    return samples


def domainnet_list(spec: PairSpec, domain: str, split: str) -> list[tuple[str, int]]:
    root = dataset_root(spec)
    for base in bases(spec):
        for path in (base / f"{domain}_{split}.txt", base / "image_list" / f"{domain}_{split}.txt"):
            if path.is_file():
                return read_image_list(path, base)
    raise DataError(
        f"DomainNet split list {domain}_{split}.txt not found under {root}; expected "
        f"{LAYOUTS['domainnet'].replace('ROOT', str(root))}; or add dataset.download=true to "
        "fetch and check it"
    )


@register_pair("domainnet")
def load_domainnet(spec: PairSpec) -> PairData:
    names = chosen_domains(spec, DOMAINNET, ("clipart", "sketch"))
    lists = {(d, s): domainnet_list(spec, d, s) for d in names for s in ("train", "test")}
    # class k's name: the folder of its images (DOMAIN/CLASS/file.jpg), for predict.py
    names_of = {y: Path(p).parent.name for samples in lists.values() for p, y in samples}
    classes = [names_of.get(k, str(k)) for k in range(max(names_of) + 1)]
    train_tf, eval_tf = folder_transforms(spec)
    domains = []
    for name in names:
        train = lists[name, "train"]
        rest, val, _ = split_indices(len(train), (val_size(len(train)), 0), spec.split_seed)
        held_out = [train[i] for i in val.tolist()]
        kept = train if name == names[1] else [train[i] for i in rest.tolist()]
        domains.append(
            DomainData(
                name,
                ImageFiles(kept, train_tf),
                ImageFiles(held_out, eval_tf),
                ImageFiles(lists[name, "test"], eval_tf),
            )
        )
    return PairData(
        domains[0], domains[1], num_classes=len(classes), preprocessing={"classes": classes}
    )
