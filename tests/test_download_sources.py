"""The sources of dann/data/sources.py and benchmark_sources.py, through the local HTTP server of
test_download.py: Google Drive's warning page, the published layout and counts checked after
unpacking, alternative sources tried in turn, and every benchmark's official and re-packed
layouts read by its loader after the download."""

import dataclasses
import io
import zipfile

import pytest
from PIL import Image
from test_download import FAST, files_under, md5, server, source, tar_bytes  # noqa: F401

from dann.data import get_pair
from dann.data.download import DownloadError, RemoteFile, fetch, fetch_first
from dann.data.drive import confirmation_url, page_error
from dann.data.registry import PairSpec
from dann.data.sources import PAIR_SOURCES, all_sources, is_dead, sources_for, urls_of

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
    right = dataclasses.replace(wrong, expected={"a/*": 3, "list.txt": 2})
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


# ---- every benchmark's layouts, fetched and read by its loader ---------------------------------


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (12, 10), (90, 20, 200)).save(buf, format="JPEG")
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
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
        real = all_sources()[source_name]
        fake = archives(source_name)
        assert set(fake) == {f.name for f in real.files}
        server.files |= {f"/m/{n}": data for n, data in fake.items()}
        # the fakes' own counts under the real patterns
        offline = dataclasses.replace(
            real,
            files=tuple(
                dataclasses.replace(f, checksum=md5(fake[f.name]), urls=()) for f in real.files
            ),
            mirrors=(f"{server.url}/m",),
            expected={p: fake_count(fake, p) for p in real.expected},
        )
        assert all(offline.expected.values()), offline.expected  # every pattern matches a fake
        fetch(offline, tmp_path / "root", **FAST)
    spec = PairSpec(pair, str(tmp_path / "root"), tmp_path / "cache", 0, 32, 3, domains)
    data = get_pair(pair)(spec)
    assert data.num_classes == 2
    assert len(data.source.train) > 0 and len(data.target.test) > 0
    x, y = data.target.test[0]
    assert x.shape == (3, 32, 32) and y in (0, 1)


def fake_count(fake: dict[str, bytes], pattern: str) -> int:
    """What `pattern` counts in the fake's files once unpacked (archives listed by member)."""
    import fnmatch
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
    tops = {m.split("/")[0] for m in members}
    if len(tops) == 1 and not any(fnmatch.fnmatch(m, pattern) for m in members):
        wrapper = tops.pop() + "/"  # the fetch unwraps a single top-level folder
        members = {m.removeprefix(wrapper): v for m, v in members.items()}
    if not any(c in pattern for c in "*?["):
        return len([line for line in members.get(pattern, b"").decode().splitlines() if line])
    return sum(
        1 for m in members if fnmatch.fnmatch(m, pattern) and m.count("/") == pattern.count("/")
    )
