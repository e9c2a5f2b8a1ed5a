"""Verified downloads (dann/data/download.py) against a local HTTP server started by the tests:
mirrors in order, checksums, resumed partial files, safe extraction, clear failures."""

import gzip
import hashlib
import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import run_and_recount

from dann.data.download import DownloadError, RemoteFile, Source, fetch, mirrors_for


class Server:
    """Serves `files` (path -> bytes) under http://127.0.0.1:<port>/; honours Range; paths in
    `drop_once` send half their bytes and close the connection the first time."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.pages: set[str] = set()  # paths served as text/html (a host's web page)
        self.drop_once: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                start = int(rng.split("=")[1].rstrip("-")) if rng else 0
                if start >= len(body) > 0:
                    self.send_error(416, "Range Not Satisfiable")
                    return
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body) - start))
                if self.path in server.pages:
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                if self.path in server.drop_once:
                    server.drop_once.discard(self.path)
                    self.wfile.write(body[start : start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        # a short poll: shutdown() waits for the next one (0.5 s by default, in every test)
        serve = lambda: self.httpd.serve_forever(poll_interval=0.02)  # noqa: E731
        threading.Thread(target=serve, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()


def tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def source(files, mirrors, dest="thing") -> Source:
    return Source("thing", tuple(files), tuple(mirrors), dest, manual="put x.bin in <root>/thing")


def files_under(root: Path) -> list[str]:
    """Files under root, without the fetch's own bookkeeping (dot files: markers, locks)."""
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


FAST = {"timeout": 5, "retries": 2, "backoff": 0.01, "progress": False}


def test_first_mirror_404_then_second_mirror_serves_verified_files(server, tmp_path):
    payload = b"x" * 100_000
    archive = tar_bytes({"a/b.txt": b"hello", "c.txt": b"world"})
    server.files = {"/m2/x.bin.gz": gzip.compress(payload), "/m2/t.tar.gz": archive}
    files = [
        RemoteFile("x.bin.gz", md5(gzip.compress(payload)), extract="gunzip"),
        RemoteFile("t.tar.gz", md5(archive), extract="tar"),
    ]
    dest = fetch(source(files, [f"{server.url}/m1", f"{server.url}/m2"]), tmp_path, **FAST)
    assert (dest / "x.bin").read_bytes() == payload
    assert (dest / "a" / "b.txt").read_bytes() == b"hello"
    assert (dest / "c.txt").read_bytes() == b"world"
    assert [p for p, _ in server.requests][:2] == ["/m1/x.bin.gz", "/m2/x.bin.gz"]


def test_direct_links_come_after_mirrors_and_a_web_page_is_not_the_file(server, tmp_path):
    """Box/Dropbox/Drive links do not end in the file name; a sharing host that answers with a
    page (login, quota, virus scan) must not be taken for the file."""
    payload = b"weights" * 1000
    page = b"<html>Google Drive can't scan this file for viruses</html>"
    server.files = {"/m/x.bin": page, "/shared/static/abc": page, "/dl?id=1&confirm=t": payload}
    server.pages = {"/m/x.bin", "/shared/static/abc"}
    file = RemoteFile("x.bin", None, urls=(f"{server.url}/shared/static/abc",))
    # unverified (no checksum): only the content type can tell a page from the file
    with pytest.raises(DownloadError, match="web page, not the file") as failure:
        fetch(source([file], [f"{server.url}/m"]), tmp_path, **FAST)
    assert "/m/x.bin" in str(failure.value) and "/shared/static/abc" in str(failure.value)
    assert files_under(tmp_path) == []
    file = RemoteFile("x.bin", md5(payload), urls=(*file.urls, f"{server.url}/dl?id=1&confirm=t"))
    dest = fetch(source([file], [f"{server.url}/m"]), tmp_path, **FAST)
    assert (dest / "x.bin").read_bytes() == payload
    assert [p for p, _ in server.requests][-3:] == [
        "/m/x.bin",
        "/shared/static/abc",
        "/dl?id=1&confirm=t",
    ]


def test_every_pair_that_reads_files_has_a_fetch_path():
    """The README's dataset table: every pair needing files fetches them all with one flag."""
    import yaml

    from dann.data.sources import PAIR_SOURCES, all_sources, sources_for

    configs = Path(__file__).resolve().parents[1] / "configs" / "dataset"
    loaded = {p.stem: yaml.safe_load(p.read_text()) for p in configs.glob("*.yaml")}
    # a `# @package _global_` config holds its keys under `dataset:`
    with_flag = {name for name, c in loaded.items() if "download" in c.get("dataset", c)}
    assert with_flag == set(PAIR_SOURCES)  # the flag exists exactly where it can do something
    paper_and_office = {"mnist_to_mnistm", "svhn_to_mnist", "syndigits_to_svhn", "office31"}
    assert paper_and_office | {"synsigns_to_gtsrb", "mnist_to_usps"} <= with_flag
    for pair in with_flag:
        assert sources_for(pair, loaded[pair])  # the config's domains
    for name, src in all_sources().items():
        assert src.manual and (src.mirrors or any(f.urls for f in src.files)), name
        unverified = [f for f in src.files if f.checksum is None]
        assert not unverified or "checksum" in src.notes, name  # said in the sources table


def test_user_mirrors_come_first_and_environment_mirrors_next(monkeypatch):
    monkeypatch.setenv("DANN_MIRRORS", "http://env/a, http://env/b/")
    src = source([], ["http://default"])
    assert mirrors_for(src, ["http://mine"]) == [
        "http://mine",
        "http://env/a",
        "http://env/b",
        "http://default",
    ]


def test_checksum_mismatch_is_an_error_and_leaves_nothing(server, tmp_path):
    server.files = {"/m/x.bin": b"tampered"}
    src = source([RemoteFile("x.bin", md5(b"original"))], [f"{server.url}/m"])
    with pytest.raises(DownloadError, match="checksum mismatch") as e:
        fetch(src, tmp_path, **FAST)
    assert "put x.bin in <root>/thing" in str(e.value)  # the manual instructions
    assert files_under(tmp_path) == [] and list(tmp_path.iterdir()) == []


def test_connection_dropped_half_way_is_resumed_and_verified(server, tmp_path):
    payload = bytes(range(256)) * 1000
    server.files = {"/m/x.bin": payload}
    server.drop_once = {"/m/x.bin"}
    dest = fetch(source([RemoteFile("x.bin", md5(payload))], [f"{server.url}/m"]), tmp_path, **FAST)
    assert (dest / "x.bin").read_bytes() == payload
    ranges = [r for _, r in server.requests]
    assert ranges[0] is None and ranges[1] == f"bytes={len(payload) // 2}-"  # resumed


def test_corrupt_archive_is_an_error_and_nothing_is_put_in_place(server, tmp_path):
    bad = b"\x1f\x8b" + b"not really gzip" * 10
    server.files = {"/m/t.tar.gz": bad}
    src = source([RemoteFile("t.tar.gz", md5(bad), extract="tar")], [f"{server.url}/m"])
    with pytest.raises(DownloadError, match="corrupt"):
        fetch(src, tmp_path, **FAST)
    assert not (tmp_path / "thing").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".thing.")]  # no staging left


def test_archive_member_outside_the_destination_is_refused(server, tmp_path):
    evil = tar_bytes({"ok.txt": b"fine", "../escaped.txt": b"gotcha"})
    server.files = {"/m/t.tar.gz": evil}
    src = source([RemoteFile("t.tar.gz", md5(evil), extract="tar")], [f"{server.url}/m"])
    with pytest.raises(DownloadError, match="refused archive member '../escaped.txt'"):
        fetch(src, tmp_path / "root", **FAST)
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "root" / "thing").exists()


def test_no_network_gives_the_urls_tried_and_the_manual_instructions(tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = source([RemoteFile("x.bin", md5(b"x"))], [f"http://127.0.0.1:{port}/m"])
    with pytest.raises(DownloadError) as e:
        fetch(src, tmp_path, **FAST)
    message = str(e.value)
    assert f"http://127.0.0.1:{port}/m/x.bin" in message and "after 3 attempts" in message
    assert "By hand: put x.bin in <root>/thing" in message


def test_a_completed_fetch_is_not_repeated_and_a_removed_file_is_fetched_again(server, tmp_path):
    server.files = {"/m/x.bin": b"data"}
    src = source([RemoteFile("x.bin", md5(b"data"))], [f"{server.url}/m"])
    dest = fetch(src, tmp_path, **FAST)
    fetch(src, tmp_path, **FAST)
    assert len(server.requests) == 1  # the marker says it is complete: no network
    (dest / "x.bin").unlink()
    fetch(src, tmp_path, **FAST)  # incomplete now: the verified download is unpacked again
    assert (dest / "x.bin").read_bytes() == b"data" and len(server.requests) == 1


def test_a_finished_part_file_is_accepted_when_the_server_answers_416(server, tmp_path):
    payload = b"complete" * 100
    server.files = {"/m/x.bin": payload}
    src = source([RemoteFile("x.bin", md5(payload))], [f"{server.url}/m"])
    downloads = tmp_path / ".downloads" / "thing"
    downloads.mkdir(parents=True)
    (downloads / "x.bin.part").write_bytes(payload)  # killed after the download, before rename
    dest = fetch(src, tmp_path, **FAST)
    assert (dest / "x.bin").read_bytes() == payload
    assert server.requests == [("/m/x.bin", f"bytes={len(payload)}-")]


def idx_gz(kind: str, array) -> bytes:
    """An MNIST IDX file (gzipped): images (n, 28, 28) uint8 or labels (n,) uint8."""
    import struct

    header = (
        struct.pack(">iiii", 2051, *array.shape)
        if kind == "images"
        else struct.pack(">ii", 2049, len(array))
    )
    return gzip.compress(header + array.tobytes())


def test_train_py_downloads_mnist_with_download_true(
    server, tmp_path, make_cfg, monkeypatch, caplog
):
    import numpy as np
    from PIL import Image

    import dann.data.sources

    rng = np.random.default_rng(0)
    payloads = {
        "train-images-idx3-ubyte.gz": idx_gz("images", rng.integers(0, 255, (200, 28, 28), "u1")),
        "train-labels-idx1-ubyte.gz": idx_gz("labels", np.arange(200, dtype="u1") % 10),
        "t10k-images-idx3-ubyte.gz": idx_gz("images", rng.integers(0, 255, (50, 28, 28), "u1")),
        "t10k-labels-idx1-ubyte.gz": idx_gz("labels", np.arange(50, dtype="u1") % 10),
    }
    jpeg = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), "u1")).save(jpeg, format="JPEG")
    bsr = tar_bytes({f"BSR/BSDS500/data/images/train/{i}.jpg": jpeg.getvalue() for i in range(2)})
    payloads["BSR_bsds500.tgz"] = bsr
    server.files = {f"/mirror/{k}": v for k, v in payloads.items()}
    real = dann.data.sources.all_sources()
    # the real table's names and layout; this fixture's checksums (the real files are not here)
    fixture = {
        name: Source(
            name,
            tuple(
                RemoteFile(f.name, f.checksum and md5(payloads[f.name]), extract=f.extract)
                for f in real[name].files
            ),
            ("http://127.0.0.1:9/unreachable",),
            real[name].dest,
            real[name].manual,
        )
        for name in ("mnist", "bsds500")
    }
    monkeypatch.setattr(dann.data.sources, "all_sources", lambda: fixture)
    root = tmp_path / "data"
    with caplog.at_level("WARNING"):
        summary, recount = run_and_recount(
            make_cfg(
                f"dataset.root={root}",
                "dataset.download=true",
                f"dataset.mirrors=[{server.url}/mirror]",
                "trainer.fast_dev_run=true",
            )
        )
    raw = root / "MNIST" / "raw"
    assert files_under(raw) == sorted(n[:-3] for n in payloads if ".gz" in n)
    assert summary["test/target_acc"] == pytest.approx(recount["test/target_acc"], abs=1e-6)
    assert "UNVERIFIED: BSR_bsds500.tgz" in caplog.text  # its checksum is not confirmed
    assert "patches of the 2 BSDS500 training photographs" in caplog.text
    assert all(path.startswith("/mirror/") for path, _ in server.requests)  # user mirror first


def test_download_without_root_names_the_fix(make_cfg):
    from dann.train import build

    with pytest.raises(Exception, match="dataset.download=true needs dataset.root"):
        build(make_cfg("dataset.download=true"))


def test_download_script_lists_every_source_with_its_pairs():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "scripts/download.py", "--list"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    ).stdout
    for name, pair in (("mnist", "mnist_to_mnistm"), ("svhn", "svhn_to_mnist"), ("usps", "")):
        row = next(line for line in out.splitlines() if line.startswith(f"| {name} |"))
        assert "md5" in row and pair in row
    row = next(line for line in out.splitlines() if line.startswith("| bsds500 |"))
    assert "NOT CONFIRMED" in row and "mnist_to_mnistm" in row


def test_mnistm_from_bsds500_is_the_papers_recipe_and_deterministic(tmp_path):
    import numpy as np
    import torch
    from PIL import Image

    from dann.data.cache import sha256_file
    from dann.data.mnistm import BSDS500_TRAIN, bsds500_photos, generate_mnistm
    from dann.data.registry import DomainData, Split

    folder = tmp_path / "root" / BSDS500_TRAIN
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):  # small stand-ins for the 200 training photographs
        Image.fromarray(rng.integers(0, 255, (36, 40, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    photos = bsds500_photos(tmp_path / "root")
    assert photos is not None and len(photos) == 3
    digits = torch.from_numpy(rng.integers(0, 255, (12, 1, 28, 28), dtype=np.uint8))
    labels = torch.arange(12) % 10
    part = Split(digits[:6], labels[:6])
    val, test = Split(digits[6:9], labels[6:9]), Split(digits[9:], labels[9:])
    mnist = DomainData("mnist", part, val, test)

    first = generate_mnistm(mnist, tmp_path / "a", seed=0, photos=photos)
    again = generate_mnistm(mnist, tmp_path / "b", seed=0, photos=photos)
    torch.testing.assert_close(first.train.inputs, again.train.inputs, rtol=0, atol=0)
    # the cache records its checksum; a cache from other photographs is another file
    (cache,) = (tmp_path / "a").glob("mnistm_generated_*.pt")
    assert (cache.parent / (cache.name + ".sha256")).read_text().strip() == sha256_file(cache)
    generate_mnistm(mnist, tmp_path / "a", seed=0)  # the package's photographs
    assert len(list((tmp_path / "a").glob("mnistm_generated_*.pt"))) == 2
    # every image is |patch - digit| for a 28 x 28 patch of one of the photographs
    for image, digit in zip(first.train.inputs, part.inputs, strict=True):
        d = digit.numpy()[0, :, :, None].astype(int)
        target = image.permute(1, 2, 0).numpy().astype(int)
        assert any(
            np.array_equal(np.abs(p[y : y + 28, x : x + 28].astype(int) - d), target)
            for p in photos
            for y in range(p.shape[0] - 27)
            for x in range(p.shape[1] - 27)
        )


def test_zip_archives_unpack_into_the_source_folder_and_refuse_escapes(server, tmp_path):
    good = zip_bytes({"GTSRB/Training/00000/a.ppm": b"P6", "GT-final_test.csv": b"x"})
    server.files = {"/m/g.zip": good}
    src = source([RemoteFile("g.zip", md5(good), extract="zip")], [f"{server.url}/m"], "gtsrb")
    dest = fetch(src, tmp_path, **FAST)
    assert files_under(dest) == ["GT-final_test.csv", "GTSRB/Training/00000/a.ppm"]
    evil = zip_bytes({"../../evil.txt": b"x"})
    server.files = {"/m/e.zip": evil}
    src = source([RemoteFile("e.zip", md5(evil), extract="zip")], [f"{server.url}/m"], "other")
    with pytest.raises(DownloadError, match="refused archive member"):
        fetch(src, tmp_path / "r", **FAST)
    assert not (tmp_path / "evil.txt").exists()
