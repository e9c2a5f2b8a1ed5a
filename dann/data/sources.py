"""Where each dataset can be downloaded from, and its checksums: one table, read by
`dataset.download=true` (the datamodule's `prepare_data`, once per node) and
`scripts/download.py`.

The URLs, mirrors and md5 sums are torchvision's own (`torchvision.datasets.MNIST.mirrors` /
`.resources`, `SVHN.split_list`, `USPS.split_list`), read from the installed torchvision so they
follow its fixes; GTSRB's are copied from its `GTSRB.download`, which keeps them in code.
Files land in the layouts the loaders read (`dataset.root=...`): `<root>/MNIST/raw/*-ubyte`
(uncompressed), `<root>/{train,test}_32x32.mat`, `<root>/usps.bz2` and `<root>/usps.t.bz2`
(read compressed), `<root>/gtsrb/` (torchvision's GTSRB layout).

MNIST-M: the `mnist_to_mnistm` pair fetches MNIST and BSDS500 and generates MNIST-M by the
paper's recipe (patches of the BSDS500 training photographs, `<root>/BSR/BSDS500/data/images/
train/`); `scripts/download.py mnistm` fetches the official release instead (the loader prefers
it when `<root>/mnist_m/` exists).

Sources hosted on Box, Dropbox or Google Drive have direct links (`RemoteFile.urls`), tried
after any mirror. Checksums: torchvision's where it has them; MNIST-M's md5 is confirmed by two
projects (dm_nevis, pytorch-adapt) for Ganin's own Drive file; BSDS500, SynDigits, SynSigns and
the Amazon reviews have no published checksum: accepted with a warning that gives the sha256 of
what arrived, to be recorded here once confirmed. Every archive's unpacked layout is checked
against the published counts (`Source.expected`). Data that several sources hold (the official
host, then re-packs) is listed in ALTERNATIVES and tried in that order; the object-recognition
benchmarks' sources are in dann/data/benchmark_sources.py. Hosts known dead (DEAD_HOSTS) stay
as last resorts only.
"""

import ast
import functools
from fnmatch import fnmatch
from importlib.util import find_spec
from pathlib import Path
from types import SimpleNamespace

from dann.data.benchmark_sources import DOMAINNET_COUNTS, benchmark_sources, domainnet_domain
from dann.data.download import RemoteFile, Source
from dann.data.drive import drive_url
from dann.errors import ConfigError


def _split_list(split_list: dict, splits: tuple[str, ...]) -> tuple[list[RemoteFile], str]:
    """torchvision's {split: [url, filename, md5]} -> files and their common base URL."""
    files = [RemoteFile(split_list[s][1], f"md5:{split_list[s][2]}") for s in splits]
    base = split_list[splits[0]][0].rsplit("/", 1)[0]
    return files, base


GTSRB_MD5 = (
    "513f3c79a4c5141765e10e952eaa2478",
    "c7e4e6327067d32654124b0fe9e82185",
    "fe31e9c9270bbcd7b84b7f21a9d9d9e5",
)


# MNIST-M (Ganin et al.): Ganin's own Google Drive file; its md5 is confirmed by two projects
# (deepmind's dm_nevis `handlers/mnist_m.py`, pytorch-adapt). pytorch-adapt's Box copy of it is
# kept as a last mirror (Box answers 404 since 2024). Published counts: 59,001 / 9,001 images.
DRIVE_MNISTM = drive_url("0B_tExHiYS-0veklUZHFYT19KYjg")
BOX_MNISTM = "https://cornell.box.com/shared/static/jado7quprg6hzzdubvwzh9umr75damwi"
MNISTM_MD5 = "859df31c91afe82e80e5012ba928f279"
MNISTM_COUNTS = {"mnist_m/mnist_m_train/*": 59_001, "mnist_m/mnist_m_test/*": 9_001}
# Ganin's Google Drive file (SynthDigits.zip); `confirm=t` skips the virus-scan page
GDRIVE_SYNDIGITS = (
    "https://drive.usercontent.google.com/download?id=0B9Z4d7lAwbnTSVR1dEFSRUFxOUU"
    "&export=download&confirm=t"
)
DROPBOX_SYNSIGNS = (
    "https://www.dropbox.com/s/7izi9lccg163on1/synthetic_data.zip?dl=1",
    # the link used by wogong/pytorch-dann and Britefury's self-ensembling code
    "https://www.dropbox.com/s/2zuyr4ndduspxin/synthetic_data.zip?dl=1",
)
# Google's cvdf mirror of the original MNIST files (same names and md5 as torchvision's)
CVDF_MNIST = "https://storage.googleapis.com/cvdf-datasets/mnist"
# the DANN authors' own Amazon reviews features (GRAAL-Research/domain_adversarial_neural_network)
GRAAL_AMAZON = (
    "https://raw.githubusercontent.com/GRAAL-Research/domain_adversarial_neural_network/master/data"
)
# lines of DOMAIN_{train,test}.svmlight in that repository; the test files are the release's
# unlabeled.review (labelled), whose line counts are the same
GRAAL_COUNTS = {
    "books": (2000, 4465),
    "dvd": (2000, 3586),
    "electronics": (2000, 5681),
    "kitchen": (2000, 5945),
}


def _torchvision_tables() -> tuple:
    """torchvision's MNIST, SVHN and USPS classes, or just their tables (MNIST.resources and
    .mirrors, SVHN.split_list, USPS.split_list) read from the installed torchvision's source
    as literals, without importing it (torch: seconds, for `download.py --list`)."""
    wanted = {"mnist": ("MNIST", "resources", "mirrors"), "svhn": ("SVHN", "split_list")}
    wanted["usps"] = ("USPS", "split_list")
    try:
        datasets = Path(find_spec("torchvision").origin).parent / "datasets"
        tables = []
        for module, (cls, *names) in wanted.items():
            tree = ast.parse((datasets / f"{module}.py").read_text())
            body = next(n.body for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
            values = {
                a.targets[0].id: a.value
                for a in body
                if isinstance(a, ast.Assign) and isinstance(a.targets[0], ast.Name)
            }
            tables.append(SimpleNamespace(**{n: ast.literal_eval(values[n]) for n in names}))
        return tuple(tables)
    except (AttributeError, OSError, StopIteration, KeyError, ValueError, SyntaxError):
        from torchvision.datasets import MNIST, SVHN, USPS  # the tables written differently

        return MNIST, SVHN, USPS


@functools.cache
def all_sources() -> dict[str, Source]:
    """name -> Source, built from the installed torchvision's tables on first use."""
    MNIST, SVHN, USPS = _torchvision_tables()  # noqa: N806 (torchvision's class names)

    svhn_files, svhn_url = _split_list(SVHN.split_list, ("train", "test"))
    usps_files, usps_url = _split_list(USPS.split_list, ("train", "test"))
    return {
        "mnist": Source(
            "mnist",
            tuple(RemoteFile(n, f"md5:{md5}", extract="gunzip") for n, md5 in MNIST.resources),
            (*MNIST.mirrors, CVDF_MNIST),
            "MNIST/raw",
            manual="put train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte "
            "and t10k-labels-idx1-ubyte (gunzipped) in <root>/MNIST/raw/",
        ),
        "svhn": Source(
            "svhn",
            tuple(svhn_files),
            (svhn_url,),
            ".",
            manual="put train_32x32.mat and test_32x32.mat (from "
            "http://ufldl.stanford.edu/housenumbers/) in <root>/",
        ),
        "bsds500": Source(
            "bsds500",
            (RemoteFile("BSR_bsds500.tgz", None, extract="tar"),),
            (
                "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/BSR",
                "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/BSR",
            ),
            ".",
            manual="unpack BSR_bsds500.tgz (the Berkeley Segmentation Dataset 500) in <root>/ "
            "so that <root>/BSR/BSDS500/data/images/train/*.jpg exist; without it MNIST-M is "
            "generated with this package's photographs",
            notes="checksum not confirmed from here",
            expected={
                f"BSR/BSDS500/data/images/{split}/*.jpg": n
                for split, n in (("train", 200), ("val", 100), ("test", 200))
            },
        ),
        "mnistm": Source(
            "mnistm",
            (
                RemoteFile(
                    "mnist_m.tar.gz",
                    f"md5:{MNISTM_MD5}",
                    extract="tar",
                    urls=(DRIVE_MNISTM, BOX_MNISTM),
                ),
            ),
            (),
            ".",
            manual="unpack mnist_m.tar.gz (the official MNIST-M release, Ganin et al.) in <root>/ "
            "so that <root>/mnist_m/mnist_m_{train,test}/*.png and "
            "mnist_m_{train,test}_labels.txt exist",
            notes="Ganin's Google Drive file (md5: dm_nevis and pytorch-adapt), then "
            "pytorch-adapt's Box copy (404 since 2024); the official release, which "
            "mnist_to_mnistm reads instead of generating MNIST-M when it is there",
            expected=MNISTM_COUNTS,
        ),
        "syndigits": Source(
            "syndigits",
            (RemoteFile("SynthDigits.zip", None, extract="zip", urls=(GDRIVE_SYNDIGITS,)),),
            (),
            ".",
            manual="unzip SynthDigits.zip (Syn Numbers, Ganin & Lempitsky 2015, linked from "
            "http://yaroslav.ganin.net/) so that <root>/synth_train_32x32.mat and "
            "synth_test_32x32.mat exist",
            notes="Google Drive; checksum not published",
            expected={"synth_train_32x32.mat": 1, "synth_test_32x32.mat": 1},
        ),
        "synsigns": Source(
            "synsigns",
            (RemoteFile("synthetic_data.zip", None, extract="zip", urls=DROPBOX_SYNSIGNS),),
            (),
            ".",
            manual="unzip synthetic_data.zip (Synthetic Signs, Moiseev et al. 2013) in <root>/ "
            "so that <root>/synthetic_data/train_labelling.txt and train/*.png exist, or sort "
            "the images into <root>/synsigns/CLASSID/*.png",
            notes="Dropbox; checksum not published",
            expected={
                "synthetic_data/train/*.png": 100_000,
                "lines:synthetic_data/train_labelling.txt": 100_000,
            },
        ),
        "amazon_reviews": Source(
            "amazon_reviews",
            (RemoteFile("processed_acl.tar.gz", None, extract="tar"),),
            ("https://www.cs.jhu.edu/~mdredze/datasets/sentiment",),
            ".",
            manual="unpack processed_acl.tar.gz (the Multi-Domain Sentiment Dataset, Blitzer et "
            "al. 2007) in <root>/ so that <root>/processed_acl/DOMAIN/{positive,negative,"
            "unlabeled}.review exist",
            notes="checksum not published",
            expected={
                f"lines:processed_acl/{domain}/{file}.review": n
                for domain, (_, unlabeled) in GRAAL_COUNTS.items()
                for file, n in (("positive", 1000), ("negative", 1000), ("unlabeled", unlabeled))
            },
        ),
        "amazon_reviews_graal": Source(
            "amazon_reviews_graal",
            tuple(
                RemoteFile(f"{domain}_{split}.svmlight", None)
                for domain in GRAAL_COUNTS
                for split in ("train", "test")
            ),
            (GRAAL_AMAZON,),
            ".",
            manual="put the DANN authors' DOMAIN_train.svmlight and DOMAIN_test.svmlight "
            "(github.com/GRAAL-Research/domain_adversarial_neural_network, data/) in <root>/",
            notes="the paper authors' features; checksum not published",
            expected={
                f"lines:{domain}_{split}.svmlight": n
                for domain, counts in GRAAL_COUNTS.items()
                for split, n in zip(("train", "test"), counts, strict=True)
            },
        ),
        # torchvision's GTSRB.download (0.29) holds these URLs and md5 sums in its code
        "gtsrb": Source(
            "gtsrb",
            (
                RemoteFile("GTSRB-Training_fixed.zip", f"md5:{GTSRB_MD5[0]}", extract="zip"),
                RemoteFile("GTSRB_Final_Test_Images.zip", f"md5:{GTSRB_MD5[1]}", extract="zip"),
                RemoteFile("GTSRB_Final_Test_GT.zip", f"md5:{GTSRB_MD5[2]}", extract="zip"),
            ),
            ("https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370",),
            "gtsrb",
            expected={
                "GTSRB/Training/*/*.ppm": 39_209,
                "GTSRB/Final_Test/Images/*.ppm": 12_630,
                "lines:GT-final_test.csv": 12_631,  # a header and one line per test image
            },
            manual="unzip GTSRB-Training_fixed.zip, GTSRB_Final_Test_Images.zip and "
            "GTSRB_Final_Test_GT.zip in <root>/gtsrb/ (torchvision's layout)",
        ),
        "usps": Source(
            "usps",
            tuple(usps_files),
            (usps_url,),
            ".",
            manual="put usps.bz2 and usps.t.bz2 (libsvm's multiclass datasets page), still "
            "bz2-compressed, in <root>/",
        ),
        **benchmark_sources(),
    }


# the data each pair reads from dataset.root (MNIST-M is generated from MNIST when absent): names
# of sources, or of the data in ALTERNATIVES; `{source}` / `{target}`: the pair's domains
PAIR_SOURCES: dict[str, tuple[str, ...]] = {
    "mnist_to_mnistm": ("mnist", "bsds500"),
    "svhn_to_mnist": ("svhn", "mnist"),
    "mnist_to_usps": ("usps", "mnist"),
    "usps_to_mnist": ("usps", "mnist"),
    "mnist_to_digits": ("mnist",),
    "digits_to_mnist": ("mnist",),
    "syndigits_to_svhn": ("syndigits", "svhn"),
    "synsigns_to_gtsrb": ("synsigns", "gtsrb"),
    "office31": ("office31",),
    "office_home": ("office_home",),
    "visda2017": ("visda2017",),
    "domainnet": ("domainnet_{source}", "domainnet_{target}"),
    "amazon_reviews": ("amazon_reviews",),
}
# hosts known to answer 404 for the files here: their links stay as last resorts, never alone
DEAD_HOSTS = ("cornell.box.com",)


def urls_of(source: Source) -> list[str]:
    """The source's own mirrors (as base URLs) and direct links."""
    return [*source.mirrors, *(url for f in source.files for url in f.urls)]


def is_dead(url: str) -> bool:
    return any(f"//{host}/" in url for host in DEAD_HOSTS)


# data that more than one source provides, tried in this order (the official host first)
ALTERNATIVES: dict[str, tuple[str, ...]] = {
    "office31": ("office31", "office31_tllib", "office31_box"),
    "office_home": ("office_home", "office_home_tllib"),
    "visda2017": ("visda2017", "visda2017_tllib"),
    "amazon_reviews": ("amazon_reviews", "amazon_reviews_graal"),
    **{f"domainnet_{d}": (f"domainnet_{d}", f"domainnet_{d}_tllib") for d in DOMAINNET_COUNTS},
}


def alternatives(name: str) -> tuple[Source, ...]:
    """The sources of one piece of data, in the order they are tried."""
    return tuple(all_sources()[n] for n in ALTERNATIVES.get(name, (name,)))


def pairs_reading(source: str) -> list[str]:
    """The pairs that may fetch `source` (the download listing)."""
    provided = {data: ALTERNATIVES.get(data, (data,)) for data in [*all_sources(), *ALTERNATIVES]}

    def reads(name: str) -> bool:  # `{source}` / `{target}`: any domain
        pattern = name.format(source="*", target="*")
        return any(fnmatch(data, pattern) and source in names for data, names in provided.items())

    return [pair for pair, names in PAIR_SOURCES.items() if any(map(reads, names))]


def sources_for(pair: str, options: dict | None = None) -> list[tuple[Source, ...]]:
    """What a pair (or one piece of data, by its own name) downloads: for each piece of data,
    its sources in the order they are tried. `options`: the dataset config (its domains)."""
    if pair in all_sources() or pair in ALTERNATIVES:
        return [alternatives(pair)]
    if pair not in PAIR_SOURCES:
        fetchable = ", ".join(sorted(PAIR_SOURCES))
        raise ConfigError(
            f"dataset.download=true: nothing to download for {pair!r} (its files are put in "
            f"place by hand, see the README's Data section); pairs with downloads: {fetchable}"
        )
    options = options or {}
    domains = {k: domainnet_domain(options.get(k)) for k in ("source", "target")}
    names = [n.format(**domains) for n in PAIR_SOURCES[pair]]
    unknown = [n for n in dict.fromkeys(names) if n not in all_sources() and n not in ALTERNATIVES]
    if unknown:
        raise ConfigError(
            f"dataset.download=true: no download for {', '.join(unknown)}; check dataset.source "
            "and dataset.target (scripts/download.py: --source and --target)"
        )
    return [alternatives(name) for name in dict.fromkeys(names)]
