"""Where the object-recognition benchmarks can be downloaded from: Office-31, Office-Home,
VisDA-2017 and DomainNet, each from its official host first, then from re-packs of the same
images (TLlib's per-domain archives on Tsinghua's cloud, pytorch-adapt's). Every source states
the published counts its files must have once unpacked (`Source.expected`), so a wrong or
truncated release fails at download time, not in training.

Provenance of the checksums and counts (none confirmed by a download from here):
- Office-31's standard archive (Saenko et al. 2010, `domain_adaptation_images.tar.gz`, Google
  Drive `0B4IapRTv9pJ1WGZVd1VDMmhwdlE`): md5 from deepmind's dm_nevis
  (`handlers/office31.py`); counts amazon 2,817 / dslr 498 / webcam 795 (pytorch-adapt).
- Office-Home (Venkateswara et al. 2017, `OfficeHomeDataset_10072016.zip`, Drive
  `0B81rNlvomiwed0V1YUxQdC1uOTg`): no published checksum; counts Art 2,427 / Clipart 4,365 /
  Product 4,439 / Real World 4,357 (the paper; pytorch-adapt).
- VisDA-2017 classification (Peng et al. 2017, csr.bu.edu `visda17/clf/`): no published
  checksum; counts train (synthetic) 152,397 / validation (real) 55,388 (the paper).
- DomainNet (Peng et al. 2019, csr.bu.edu `visda/2019/multi-source/`, the cleaned release):
  zip md5s from the shifthappens benchmark's ImageNet-D task; split lists' line counts
  (train / test) from pytorch-adapt's DomainNet.
- TLlib's archives (thuml/Transfer-Learning-Library `tllib/vision/datasets/`) have no published
  checksums: accepted with the sha256 of what arrived in the log, and held to the same counts.
"""

from dann.data.download import RemoteFile, Source
from dann.data.drive import drive_url

TSINGHUA = "https://cloud.tsinghua.edu.cn/f/{}/?dl=1"
OFFICE31_COUNTS = {"amazon": 2817, "dslr": 498, "webcam": 795}
OFFICE_HOME_COUNTS = {"Art": 2427, "Clipart": 4365, "Product": 4439, "Real_World": 4357}
VISDA_COUNTS = {"train": 152_397, "validation": 55_388}
# the cleaned release's split lists: (train, test) lines
DOMAINNET_COUNTS = {
    "clipart": (33_525, 14_604),
    "infograph": (36_023, 15_582),
    "painting": (50_416, 21_850),
    "quickdraw": (120_750, 51_750),
    "real": (120_906, 52_041),
    "sketch": (48_212, 20_916),
}
DOMAINNET_MD5 = {
    "clipart": "cd0d8f2d77a4e181449b78ed62bccf1e",
    "infograph": "720380b86f9e6ab4805bb38b6bd135f8",
    "painting": "1ae32cdb4f98fe7ab5eb0a351768abfd",
    "quickdraw": "bdc1b6f09f277da1a263389efe0c7a66",
    "real": "dcc47055e8935767784b7162e7c7cca6",
    "sketch": "658d8009644040ff7ce30bb2e820850f",
}
DOMAINNET_HOST = "http://csr.bu.edu/ftp/visda/2019/multi-source"
DOMAINNET_CLEANED = ("clipart", "painting")  # their cleaned zips sit under groundtruth/
TLLIB = "TLlib's re-pack; checksum not published"
BOX_DEAD = "Box (pytorch-adapt's host): answers 404 since 2024, kept as a last mirror"

TLLIB_IDS = {
    "office31": {
        "image_list": "2c1dd9fbcaa9455aa4ad",
        "amazon": "ec12dfcddade43ab8101",
        "dslr": "a41d818ae2f34da7bb32",
        "webcam": "8a41009a166e4131adcd",
    },
    "office_home": {
        "image_list": "1b0171a188944313b1f5",
        "Art": "6a006656b9a14567ade2",
        "Clipart": "ae88aa31d2d7411dad79",
        "Product": "f219b0ff35e142b3ab48",
        "Real_World": "6c19f3f15bb24ed3951a",
    },
    "visda2017": {
        "image_list": "c107de37b8094c5398dc",
        "train": "c5f3ce59139144ec8221",
        "validation": "da70e4b1cf514ecea562",
    },
    "domainnet": {
        "image_list": "bf0fe327e4b046eb89ba",
        "clipart": "f0515164a4864220b98b",
        "infograph": "98b19d5fc9884109a9cb",
        "painting": "11285ce9fbd34bb7b28c",
        "quickdraw": "6faa9efb498b494abf66",
        "real": "17a101842c564959b525",
        "sketch": "b305add26e9d47349495",
    },
}


def _tllib(
    name: str, dataset: str, parts: tuple[str, ...], manual: str, expected: dict[str, int]
) -> Source:
    """TLlib's re-pack: its archives of `parts` (domains) and its image lists, from Tsinghua's
    cloud, unpacked into `<root>/<dataset>/`."""
    ids = TLLIB_IDS[dataset]
    files = [
        RemoteFile(f"{p}.tgz", None, extract="tar", urls=(TSINGHUA.format(ids[p]),)) for p in parts
    ]
    list_url = TSINGHUA.format(ids["image_list"])
    files.append(RemoteFile("image_list.zip", None, extract="zip", urls=(list_url,)))
    return Source(name, tuple(files), (), dataset, manual=manual, notes=TLLIB, expected=expected)


def _office31() -> dict[str, Source]:
    manual = (
        "unpack Office-31 (domain_adaptation_images.tar.gz, Saenko et al. 2010) in "
        "<root>/office31/ so that <root>/office31/{amazon,dslr,webcam}/images/CLASS/*.jpg exist"
    )
    expected = {f"{d}/images/*/*": n for d, n in OFFICE31_COUNTS.items()}
    return {
        "office31": Source(
            "office31",
            (
                RemoteFile(
                    "domain_adaptation_images.tar.gz",
                    "md5:1b536d114869a5a8aa4580b89e9758fb",
                    extract="tar",
                    urls=(drive_url("0B4IapRTv9pJ1WGZVd1VDMmhwdlE"),),
                ),
            ),
            (),
            "office31",
            manual=manual,
            notes="the standard archive on Google Drive (md5: dm_nevis)",
            expected=expected,
        ),
        "office31_tllib": _tllib(
            "office31_tllib", "office31", tuple(OFFICE31_COUNTS), manual, expected
        ),
        "office31_box": Source(
            "office31_box",
            (
                RemoteFile(
                    "office31.tar.gz",
                    "md5:89818e596f3cdda1d56da0f077435faa",
                    extract="tar",
                    urls=(
                        "https://cornell.box.com/shared/static/3v2ftdkdhpz1lbbr4uhu0135w7m79p7q",
                    ),
                ),
            ),
            (),
            ".",
            manual=manual,
            notes=f"pytorch-adapt's re-pack (md5 theirs); {BOX_DEAD}",
            expected={f"office31/{d}/**/*.jpg": n for d, n in OFFICE31_COUNTS.items()},
        ),
    }


def _office_home() -> dict[str, Source]:
    manual = (
        "unzip OfficeHomeDataset_10072016.zip (Venkateswara et al. 2017, "
        "https://www.hemanthdv.org/officeHomeDataset.html) and move its contents to "
        "<root>/office_home/ so that <root>/office_home/{Art,Clipart,Product,Real World}/CLASS/"
        "*.jpg exist"
    )
    official = {d.replace("_", " "): n for d, n in OFFICE_HOME_COUNTS.items()}
    return {
        "office_home": Source(
            "office_home",
            (
                RemoteFile(
                    "OfficeHomeDataset_10072016.zip",
                    None,
                    extract="zip",
                    urls=(drive_url("0B81rNlvomiwed0V1YUxQdC1uOTg"),),
                ),
            ),
            (),
            "office_home",
            manual=manual,
            notes="the official release on Google Drive; checksum not published",
            expected={f"{d}/*/*": n for d, n in official.items()},
        ),
        "office_home_tllib": _tllib(
            "office_home_tllib",
            "office_home",
            tuple(OFFICE_HOME_COUNTS),
            manual,
            {f"{d}/*/*": n for d, n in OFFICE_HOME_COUNTS.items()},
        ),
    }


def _visda2017() -> dict[str, Source]:
    manual = (
        "download train.tar and validation.tar (http://csr.bu.edu/ftp/visda17/clf/, the "
        "VisDA-2017 classification track) and unpack both in <root>/visda2017/ so that "
        "<root>/visda2017/{train,validation}/CLASS/ exist"
    )
    expected = {f"{split}/*/*": n for split, n in VISDA_COUNTS.items()}
    sizes = {"train": 7_698_031_104, "validation": None}
    return {
        "visda2017": Source(
            "visda2017",
            tuple(
                RemoteFile(f"{split}.tar", None, size=sizes[split], extract="tar")
                for split in VISDA_COUNTS
            ),
            ("http://csr.bu.edu/ftp/visda17/clf",),
            "visda2017",
            manual=manual,
            notes="the official host; checksum not published",
            expected=expected,
        ),
        "visda2017_tllib": _tllib(
            "visda2017_tllib", "visda2017", tuple(VISDA_COUNTS), manual, expected
        ),
    }


def _domainnet() -> dict[str, Source]:
    sources = {}
    for domain, (train, test) in DOMAINNET_COUNTS.items():
        folder = f"{DOMAINNET_HOST}/groundtruth" if domain in DOMAINNET_CLEANED else DOMAINNET_HOST
        manual = (
            f"download {folder}/{domain}.zip and {DOMAINNET_HOST}/domainnet/txt/"
            f"{domain}_{{train,test}}.txt, unzip the images in <root>/domainnet/ and put the two "
            f"lists next to them, so that <root>/domainnet/{domain}/CLASS/*.jpg and "
            f"<root>/domainnet/{domain}_train.txt exist"
        )
        lists = tuple(
            RemoteFile(
                f"{domain}_{split}.txt",
                None,
                urls=(f"{DOMAINNET_HOST}/domainnet/txt/{domain}_{split}.txt",),
            )
            for split in ("train", "test")
        )
        sources[f"domainnet_{domain}"] = Source(
            f"domainnet_{domain}",
            (
                RemoteFile(
                    f"{domain}.zip",
                    f"md5:{DOMAINNET_MD5[domain]}",
                    extract="zip",
                    urls=(f"{folder}/{domain}.zip",),
                ),
                *lists,
            ),
            (),
            "domainnet",
            manual=manual,
            notes="the official host (zip md5: shifthappens); split lists' checksum not published",
            expected={f"lines:{domain}_train.txt": train, f"lines:{domain}_test.txt": test},
        )
        sources[f"domainnet_{domain}_tllib"] = _tllib(
            f"domainnet_{domain}_tllib",
            "domainnet",
            (domain,),
            manual,
            {
                f"lines:image_list/{domain}_train.txt": train,
                f"lines:image_list/{domain}_test.txt": test,
            },
        )
    return sources


def domainnet_domain(given: str | None) -> str:
    """A DomainNet domain by name or first letter (c, i, p, q, r, s), as dataset.source takes."""
    given = str(given).lower()
    return next((d for d in DOMAINNET_COUNTS if given in (d, d[0])), given)


def benchmark_sources() -> dict[str, Source]:
    """name -> Source for the four benchmarks (official first, then re-packs)."""
    return {**_office31(), **_office_home(), **_visda2017(), **_domainnet()}
