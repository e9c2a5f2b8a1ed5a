"""The sources of dann/data/sources.py and benchmark_sources.py, through the local HTTP server of
test_download.py: Google Drive's warning page, the published layout and counts checked after
unpacking, alternative sources tried in turn, and every benchmark's official and re-packed
layouts read by its loader after the download."""

import dataclasses
import io
import zipfile

import pytest
from PIL import Image
from test_download import (  # noqa: F401 (server: the fixture)
    FAST,
    files_under,
    md5,
    server,
    source,
    tar_bytes,
    zip_bytes,
)

from dann.data import get_pair
from dann.data.download import DownloadError, RemoteFile, fetch, fetch_first
from dann.data.drive import confirmation_url, page_error
from dann.data.registry import PairSpec
from dann.data.sources import PAIR_SOURCES, all_sources, is_dead, sources_for, urls_of
from dann.errors import ConfigError

WARNING_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head>
<body><div class="uc-main"><p class="uc-warning-subcaption">Google Drive can't scan this file for
viruses.</p><form id="download-form" action="{action}" method="get">
<input type="submit" id="uc-download-link" value="Download anyway"/>
<input type="hidden" name="id" value="ABC"><input type="hidden" name="export" value="download">
<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="{uuid}">
</form></div></body></html>"""
QUOTA_PAGE = """<html><body><p class="uc-error-caption">Sorry, you can't view or download this
file at this time.</p><p class="uc-error-subcaption">Too many users have viewed or downloaded this
file recently.</p></body></html>"""


def test_drive_warning_page_gives_the_confirmed_url_with_its_uuid():
    page = WARNING_PAGE.format(action="https://drive.usercontent.google.com/download", uuid="u-1")
    url = confirmation_url(page, "https://drive.google.com/uc?export=download&id=ABC")
    assert url == (
        "https://drive.usercontent.google.com/download?id=ABC&export=download&confirm=t&uuid=u-1"
    )
    old = '<a id="uc-download-link" href="/uc?export=download&amp;confirm=Xy1z&amp;id=ABC">'
    assert confirmation_url(old, "https://drive.google.com/uc?id=ABC") == (
        "https://drive.google.com/uc?export=download&confirm=Xy1z&id=ABC"
    )
    assert confirmation_url(QUOTA_PAGE, "https://drive.google.com/uc?id=ABC") is None
    assert page_error(QUOTA_PAGE) == "Too many users have viewed or downloaded this file recently."


def test_a_large_drive_file_is_fetched_through_its_warning_page(server, tmp_path):  # noqa: F811
    payload = b"mnist-m" * 5000
    page = WARNING_PAGE.format(action="/download", uuid="u-42").encode()
    server.files = {
        "/uc?export=download&id=ABC": page,
        # only the URL with the form's every hidden field (the uuid too) sends the file
        "/download?id=ABC&export=download&confirm=t&uuid=u-42": payload,
        "/uc?export=download&id=QUOTA": QUOTA_PAGE.encode(),
    }
    server.pages = {"/uc?export=download&id=ABC", "/uc?export=download&id=QUOTA"}
    file = RemoteFile("x.bin", md5(payload), urls=(f"{server.url}/uc?export=download&id=ABC",))
    dest = fetch(source([file], []), tmp_path, **FAST)
    assert (dest / "x.bin").read_bytes() == payload
    quota = RemoteFile("y.bin", None, urls=(f"{server.url}/uc?export=download&id=QUOTA",))
    with pytest.raises(DownloadError, match="web page, not the file.*Too many users"):
        fetch(dataclasses.replace(source([quota], []), name="other"), tmp_path, **FAST)


def test_unpacked_counts_are_checked_and_a_wrapping_folder_is_unwrapped(server, tmp_path):  # noqa: F811
    members = {f"release/a/{i}.png": b"x" for i in range(3)} | {"release/list.txt": b"1\n2\n"}
    archive = tar_bytes(members)
    server.files = {"/m/t.tar.gz": archive}
    file = RemoteFile("t.tar.gz", md5(archive), extract="tar")
    wrong = dataclasses.replace(source([file], [f"{server.url}/m"]), expected={"a/*": 4})
    with pytest.raises(DownloadError, match=r"a/\*: 3 found, 4 expected"):
        fetch(wrong, tmp_path, **FAST)
    assert files_under(tmp_path) == []  # nothing put in place
    right = dataclasses.replace(wrong, expected={"a/*": 3, "lines:list.txt": 2})
    dest = fetch(right, tmp_path, **FAST)
    assert files_under(dest) == ["a/0.png", "a/1.png", "a/2.png", "list.txt"]


def test_alternatives_are_tried_in_turn_and_all_failures_reported(server, tmp_path):  # noqa: F811
    archive = tar_bytes({"d/1.txt": b"one"})
    server.files = {"/second/t.tar.gz": archive}
    file = RemoteFile("t.tar.gz", md5(archive), extract="tar")
    first = dataclasses.replace(source([file], [f"{server.url}/first"]), name="official")
    second = dataclasses.replace(source([file], [f"{server.url}/second"]), name="repack")
    dest = fetch_first([first, second], tmp_path, **FAST)
    assert (dest / "d" / "1.txt").read_bytes() == b"one"
    served = len(server.requests)
    assert fetch_first([first, second], tmp_path, **FAST) == dest  # done: no network
    assert len(server.requests) == served
    with pytest.raises(DownloadError, match=r"(?s)2 tried.*official.*/first/.*repack.*/third/"):
        third = dataclasses.replace(second, name="repack", mirrors=(f"{server.url}/third",))
        fetch_first([first, third], tmp_path / "other", **FAST)


def test_no_data_depends_on_a_dead_host_alone():
    """MNIST-M and Office-31 were only on pytorch-adapt's Box account (404 since 2024)."""
    for pair, names in PAIR_SOURCES.items():
        domains = {"source": "clipart", "target": "sketch"} if "{" in "".join(names) else {}
        for alternatives in sources_for(pair, domains):
            live = [u for s in alternatives for u in urls_of(s) if not is_dead(u)]
            assert live, (pair, [s.name for s in alternatives])
    for name in ("mnistm", "office31"):
        urls = [u for s in sources_for(name)[0] for u in urls_of(s)]
        assert not is_dead(urls[0]) and "drive.google.com" in urls[0]
    # DomainNet downloads only the two domains asked for, named or by letter
    chosen = sources_for("domainnet", {"source": "c", "target": "real"})
    assert [s.name for s in chosen[0]] == ["domainnet_clipart", "domainnet_clipart_tllib"]
    assert [s.name for s in chosen[1]] == ["domainnet_real", "domainnet_real_tllib"]
    with pytest.raises(ConfigError, match="--source and --target"):
        sources_for("domainnet", {})


# ---- every benchmark's layouts, fetched and read by its loader ---------------------------------


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (12, 10), (90, 20, 200)).save(buf, format="JPEG")
    return buf.getvalue()


def images(prefix: str, classes=("bike", "mug"), n=2, ext="jpg") -> dict[str, bytes]:
    return {f"{prefix}/{c}/{i}.{ext}": jpeg() for c in classes for i in range(n)}


def domainnet_lists(domain: str) -> dict[str, bytes]:
    rows = [f"{domain}/{c}/{i}.jpg {k}" for k, c in enumerate(("bike", "mug")) for i in range(2)]
    return {
        f"{domain}_train.txt": "\n".join(rows[:3]).encode(),
        f"{domain}_test.txt": rows[3].encode(),
    }


def archives(name: str) -> dict[str, bytes]:
    """A small fake of each file of the source `name`, in the published layout."""
    office = ("amazon", "dslr", "webcam")
    home = ("Art", "Clipart", "Product")
    fakes = {
        "office31": {
            "domain_adaptation_images.tar.gz": tar_bytes(
                {k: v for d in office for k, v in images(f"{d}/images").items()}
            )
        },
        "office31_tllib": {
            **{f"{d}.tgz": tar_bytes(images(f"{d}/images")) for d in office},
            "image_list.zip": zip_bytes({"image_list/amazon.txt": b"amazon/images/bike/0.jpg 0"}),
        },
        "office_home": {  # the official zip: one wrapping folder, "Real World" with a space
            "OfficeHomeDataset_10072016.zip": zip_bytes(
                {
                    k: v
                    for d in (*home, "Real World")
                    for k, v in images(f"OfficeHomeDataset_10072016/{d}").items()
                }
            )
        },
        "office_home_tllib": {
            **{f"{d}.tgz": tar_bytes(images(d)) for d in (*home, "Real_World")},
            "image_list.zip": zip_bytes({"image_list/Art.txt": b"Art/bike/0.jpg 0"}),
        },
        "visda2017": {
            "train.tar": tar_bytes(images("train", ext="png") | {"train/image_list.txt": b""}),
            "validation.tar": tar_bytes(images("validation")),
        },
        "visda2017_tllib": {
            "train.tgz": tar_bytes(images("train", ext="png")),
            "validation.tgz": tar_bytes(images("validation")),
            "image_list.zip": zip_bytes({"image_list/train.txt": b"train/bike/0.png 0"}),
        },
    }
    for domain in ("clipart", "sketch"):
        fakes[f"domainnet_{domain}"] = {
            f"{domain}.zip": zip_bytes(images(domain)),
            **domainnet_lists(domain),
        }
        lists = {  # TLlib's one zip of every domain's lists
            f"image_list/{k}": v
            for d in ("clipart", "sketch")
            for k, v in domainnet_lists(d).items()
        }
        fakes[f"domainnet_{domain}_tllib"] = {
            f"{domain}.tgz": tar_bytes(images(domain)),
            "image_list.zip": zip_bytes(lists),
        }
    return fakes[name]


CASES = [
    ("office31", "office31", {"source": "A", "target": "W"}),
    ("office31", "office31_tllib", {"source": "dslr", "target": "webcam"}),
    ("office_home", "office_home", {"source": "Ar", "target": "Rw"}),
    ("office_home", "office_home_tllib", {"source": "Product", "target": "Real_World"}),
    ("visda2017", "visda2017", {"source": "Synthetic", "target": "Real"}),
    ("visda2017", "visda2017_tllib", {"source": "train", "target": "validation"}),
    ("domainnet", "domainnet_{}", {"source": "c", "target": "sketch"}),
    ("domainnet", "domainnet_{}_tllib", {"source": "clipart", "target": "s"}),
]


@pytest.mark.parametrize(("pair", "name", "domains"), CASES, ids=[c[1] for c in CASES])
def test_each_benchmark_source_unpacks_to_what_its_loader_reads(
    server,  # noqa: F811
    tmp_path,
    pair,
    name,
    domains,
):
    """The real sources' files, layouts and count patterns, with small fakes served locally: the
    published counts scaled down to the fakes' (the patterns are the real ones)."""
    names = [name.format(d) for d in ("clipart", "sketch")] if "{}" in name else [name]
    for source_name in names:
        fetch_fake(source_name, archives(source_name), server, tmp_path / "root")
    spec = PairSpec(pair, str(tmp_path / "root"), tmp_path / "cache", 0, 32, 3, domains)
    data = get_pair(pair)(spec)
    assert data.num_classes == 2
    assert len(data.source.train) > 0 and len(data.target.test) > 0
    x, y = data.target.test[0]
    assert x.shape == (3, 32, 32) and y in (0, 1)


def fake_count(fake: dict[str, bytes], pattern: str) -> int:
    """What `pattern` counts in the fake's files once unpacked (archives listed by member)."""
    import tarfile

    members: dict[str, bytes] = {}
    for name, data in fake.items():
        if name.endswith((".tgz", ".tar", ".tar.gz")):
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                for m in tar.getmembers():
                    members[m.name] = tar.extractfile(m).read()
        elif name.endswith(".zip"):
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                members |= {n: z.read(n) for n in z.namelist()}
        else:
            members[name] = data
    found = count_members(members, pattern)
    tops = {m.split("/")[0] for m in members}
    if not found and len(tops) == 1:  # the fetch unwraps a single top-level folder
        wrapper = tops.pop() + "/"
        found = count_members({m.removeprefix(wrapper): v for m, v in members.items()}, pattern)
    return found


def count_members(members: dict[str, bytes], pattern: str) -> int:
    import fnmatch

    if pattern.startswith("lines:"):
        lines = members.get(pattern.removeprefix("lines:"), b"").decode().splitlines()
        return len([line for line in lines if line])
    slashes = pattern.count("/")
    return sum(1 for m in members if fnmatch.fnmatch(m, pattern) and m.count("/") == slashes)


# ---- the other archives: fetched with their real patterns, then read by their loaders ----------


def png(size=(28, 28)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (30, 160, 90)).save(buf, format="PNG")
    return buf.getvalue()


def ppm() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (30, 30), (200, 10, 10)).save(buf, format="PPM")
    return buf.getvalue()


def review(label: str) -> str:
    return f"great:2 not_bad:1 {label[:3]}:1 #label#:{label}"


def other_archives() -> dict[str, dict[str, bytes]]:
    """Small fakes of the digit, sign and review archives, in their published layouts."""
    mnistm = {
        f"mnist_m/mnist_m_{s}/{i:08d}.png": png() for s in ("train", "test") for i in range(3)
    }
    for s in ("train", "test"):
        lines = "\n".join(f"{i:08d}.png {i}" for i in range(3))
        mnistm[f"mnist_m/mnist_m_{s}_labels.txt"] = lines.encode()
    bsds = {
        f"BSR/BSDS500/data/images/{s}/{i}.jpg": jpeg()
        for s in ("train", "val", "test")
        for i in (1, 2)
    }
    signs = {f"synthetic_data/train/{i:05d}.png": png((40, 40)) for i in range(4)}
    labelling = "\n".join(f"train/{i:05d}.png {7 + 5 * (i % 2)} 0 0" for i in range(4))
    signs["synthetic_data/train_labelling.txt"] = labelling.encode()
    header = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"
    test_csv = "\n".join([header, "00000.ppm;30;30;1;1;29;29;7", "00001.ppm;30;30;1;1;29;29;12"])
    reviews = {
        f"processed_acl/{d}/{f}.review": "\n".join(
            review(lab) for lab in ("positive", "negative")
        ).encode()
        for d in ("books", "dvd", "electronics", "kitchen")
        for f in ("positive", "negative", "unlabeled")
    }
    svm = {
        f"{d}_{s}.svmlight": b"1 0:1.0 4:2.0\n-1 1:1.0 3:1.0\n1 2:3.0\n-1 0:1.0\n"
        for d in ("books", "dvd", "electronics", "kitchen")
        for s in ("train", "test")
    }
    return {
        "mnistm": {"mnist_m.tar.gz": tar_bytes(mnistm)},
        "bsds500": {"BSR_bsds500.tgz": tar_bytes(bsds)},
        "synsigns": {"synthetic_data.zip": zip_bytes(signs)},
        "gtsrb": {
            "GTSRB-Training_fixed.zip": zip_bytes(
                {f"GTSRB/Training/{c:05d}/{i}.ppm": ppm() for c in (7, 12) for i in range(3)}
            ),
            "GTSRB_Final_Test_Images.zip": zip_bytes(
                {f"GTSRB/Final_Test/Images/{i:05d}.ppm": ppm() for i in range(2)}
            ),
            "GTSRB_Final_Test_GT.zip": zip_bytes({"GT-final_test.csv": test_csv.encode()}),
        },
        "syndigits": {
            "SynthDigits.zip": zip_bytes(
                {"synth_train_32x32.mat": b"m", "synth_test_32x32.mat": b"m"}
            )
        },
        "amazon_reviews": {"processed_acl.tar.gz": tar_bytes(reviews)},
        "amazon_reviews_graal": svm,
    }


def fetch_fake(name: str, fake: dict[str, bytes], server, root) -> None:  # noqa: F811
    """Fetch `name` from the local server: the real files, patterns and destination, with the
    fakes' checksums and the published counts scaled down to what the fakes hold."""
    real = all_sources()[name]
    assert set(fake) == {f.name for f in real.files}
    server.files |= {f"/m/{n}": data for n, data in fake.items()}
    offline = dataclasses.replace(
        real,
        files=tuple(
            dataclasses.replace(f, checksum=md5(fake[f.name]), urls=()) for f in real.files
        ),
        mirrors=(f"{server.url}/m",),
        expected={p: fake_count(fake, p) for p in real.expected},
    )
    assert real.expected and all(offline.expected.values()), offline.expected
    fetch(offline, root, **FAST)


def test_digit_sign_and_review_archives_unpack_to_what_their_loaders_read(server, tmp_path):  # noqa: F811
    from dann.data.mnistm import bsds500_photos, load_mnistm_official

    fakes, root = other_archives(), tmp_path / "root"
    for name, fake in fakes.items():
        fetch_fake(name, fake, server, root)
    assert len(load_mnistm_official(str(root), tmp_path / "cache", 0).test) == 3
    assert len(bsds500_photos(root)) == 2
    assert sorted(p.name for p in root.glob("synth_*_32x32.mat")) == [
        "synth_test_32x32.mat",
        "synth_train_32x32.mat",
    ]
    signs = get_pair("synsigns_to_gtsrb")(PairSpec("synsigns_to_gtsrb", str(root), tmp_path / "c"))
    assert signs.num_classes == 2 and len(signs.target.test) == 2
    for files in ("processed_acl", "svmlight"):  # the release, then the authors' features
        if files == "svmlight":
            import shutil

            shutil.rmtree(root / "processed_acl")
        options = {"source": "books", "target": "dvd"}
        spec = PairSpec("amazon_reviews", str(root), tmp_path / "c", 0, None, None, options)
        reviews = get_pair("amazon_reviews")(spec)
        assert reviews.num_classes == 2 and len(reviews.target.test) > 0
