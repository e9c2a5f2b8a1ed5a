"""Verified downloads: files fetched from a list of mirrors, checked against a known checksum,
and extracted so that an interrupted or failed download never leaves files a loader would take.

A `Source` names its files (each with its checksum), the mirrors that serve them (base URLs under
which each file keeps its usual name, `<mirror>/<file>`) and what a user does by hand when every
mirror fails. `fetch(source, root)`:

- tries the user's mirrors first (`mirrors=[...]`, then the `DANN_MIRRORS` environment variable,
  comma- or space-separated), then the source's own, then the file's direct links (hosts whose
  links do not end in the file name: Box, Dropbox, Google Drive); the checksums stay the same
  whatever the mirror; a web page served instead of the file counts as a failure;
- per URL: a timeout, a few retries with exponential back-off; a partial file is resumed with an
  HTTP Range request (restarted when the server ignores it); a progress bar with size and speed;
  Google Drive's warning page for large files is passed through its confirmation form
  (dann/data/drive.py), cookies kept;
- verifies the checksum before anything is extracted or moved into place; a mismatch discards
  the file and tries the next mirror;
- after unpacking, checks the layout and the published counts (`Source.expected`: glob pattern
  -> number of files, or `lines:FILE` -> that file's number of lines), descending into a single
  top-level folder the archive may wrap its contents in; a mismatch is an error and nothing is
  put in place;
- `fetch_first(alternatives, root)` tries sources that provide the same data in turn (the
  official archive, then re-packs of it), and reports every one's failure if none succeeds;
- writes to `<root>/.downloads/` and extracts into a temporary directory next to the destination,
  renamed into place when complete; archive members that would land outside it (`../`, absolute
  paths, links) are refused;
- raises `DownloadError` (exit status 2 from the command line) with every URL tried, why each
  failed, and the manual instructions. Nothing is ever reported as downloaded that was not.
"""

import contextlib
import gzip
import hashlib
import http.client
import http.cookiejar
import logging
import os
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dann.data.drive import confirmation_url, page_error
from dann.errors import DataError

log = logging.getLogger(__name__)

MIRRORS_ENV = "DANN_MIRRORS"
CHUNK = 1 << 16
MAX_PAGE = 1 << 21  # bytes of a web page read to find a confirmation link
MAX_HOPS = 3  # confirmation pages followed in a row
# cookies kept across requests (a host's confirmation step may set one)
_OPENER = urllib.request.build_opener(
    urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
)


class DownloadError(DataError):
    """Every mirror failed (or the data failed verification): the message lists the URLs tried,
    why each failed, and how to put the files in place by hand."""


class NotTheFile(Exception):
    """A server answered with something else than the file (e.g. an HTML page)."""


@dataclass(frozen=True)
class RemoteFile:
    name: str  # the file's name under every mirror, and as downloaded
    checksum: str | None  # "md5:<hex>" or "sha256:<hex>"; None: not confirmed (warned)
    size: int | None = None  # bytes, for the listing and the progress bar when unknown
    extract: str | None = None  # "gunzip", "tar", "zip": unpacked into the destination
    # direct links, tried after the mirrors, for hosts whose links do not end in the file's
    # name (Box, Dropbox, Google Drive)
    urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class Source:
    name: str
    files: tuple[RemoteFile, ...]
    mirrors: tuple[str, ...]
    dest: str  # the folder under the root the files (or their contents) go to
    manual: str  # where to put which files by hand
    notes: str = ""  # provenance, licence, a checksum not confirmed from here
    extra: dict = field(default_factory=dict)
    # checked after unpacking, relative to dest: glob pattern -> number of files (the published
    # counts); `lines:FILE` (a list, a feature file) -> its number of non-empty lines
    expected: dict[str, int] = field(default_factory=dict)


def mirrors_for(source: Source, mirrors: Sequence[str] = ()) -> list[str]:
    """The mirrors to try, in order: the caller's, DANN_MIRRORS, the source's own."""
    env = os.environ.get(MIRRORS_ENV, "").replace(",", " ").split()
    ordered = [*mirrors, *env, *source.mirrors]
    return list(dict.fromkeys(m.rstrip("/") for m in ordered if m))


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, checksum: str | None) -> bool:
    """Whether `path` has `checksum`. None (a source whose checksum could not be confirmed):
    accepted, with a warning giving the file's sha256 to compare with a trusted copy."""
    if checksum is None:
        log.warning(
            "UNVERIFIED: %s has no confirmed checksum in dann/data/sources.py; its sha256 is %s "
            "(compare it with a trusted copy)",
            path.name,
            file_digest(path, "sha256"),
        )
        return True
    algorithm, _, expected = checksum.partition(":")
    return file_digest(path, algorithm) == expected.lower()


def _get(
    url: str, part: Path, timeout: float, size: int | None, progress: bool, hops: int = 0
) -> None:
    """Download `url` into `part`, resuming what is already there (HTTP Range). A server that
    ignores the range, or answers from another offset, restarts the file; 416 (nothing left to
    send) leaves the part as it is, for the checksum to judge. A confirmation page (Google
    Drive's, for large files) is followed to the URL its form or link gives."""
    from tqdm import tqdm

    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "dann-download"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = _OPENER.open(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            return
        raise
    with response:
        kind = response.headers.get("Content-Type", "")
        if kind.startswith("text/html") and not part.name.endswith((".html.part", ".htm.part")):
            page = response.read(MAX_PAGE).decode("utf-8", "replace")
            follow = confirmation_url(page, response.geturl()) if hops < MAX_HOPS else None
            if follow:
                log.info("%s answered with a confirmation page; following its download link", url)
                return _get(follow, part, timeout, size, progress, hops + 1)
            reason = page_error(page)
            raise NotTheFile(
                "the server sent a web page, not the file (a link that needs a browser, a "
                "login, or a download-quota page)" + (f": {reason!r}" if reason else "")
            )
        if have and (
            response.status != 206
            or not response.headers.get("Content-Range", "").startswith(f"bytes {have}-")
        ):
            have = 0  # the range was not honoured as asked: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else size
        mode = "ab" if have else "wb"
        with (
            open(part, mode) as out,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.name.removesuffix(".part"),
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            for chunk in iter(lambda: response.read(CHUNK), b""):
                out.write(chunk)
                bar.update(len(chunk))
    got = part.stat().st_size
    if total is not None and got != total:
        raise OSError(f"connection closed after {got:,} of {total:,} bytes")
    if total is None and length is None:
        log.warning("%s: the server sent no length; %s bytes received", url, f"{got:,}")


def _safe_members_tar(archive: tarfile.TarFile, dest: Path) -> list[tarfile.TarInfo]:
    members = []
    for m in archive.getmembers():
        target = (dest / m.name).resolve()
        if m.issym() or m.islnk() or m.isdev() or not target.is_relative_to(dest.resolve()):
            raise DownloadError(f"refused archive member {m.name!r}: it would land outside {dest}")
        members.append(m)
    return members


def extract(archive: Path, kind: str, dest: Path) -> None:
    """Unpack `archive` into `dest` (created), refusing members outside it."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if kind == "gunzip":
            with gzip.open(archive, "rb") as src, open(dest / archive.stem, "wb") as out:
                shutil.copyfileobj(src, out)
        elif kind == "tar":
            with tarfile.open(archive) as tar:
                members = _safe_members_tar(tar, dest)
                if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: no setuid bits etc.
                    tar.extractall(dest, members=members, filter="data")
                else:  # pragma: no cover
                    tar.extractall(dest, members=members)  # noqa: S202 - members checked
        elif kind == "zip":
            with zipfile.ZipFile(archive) as z:
                for name in z.namelist():
                    if not (dest / name).resolve().is_relative_to(dest.resolve()):
                        raise DownloadError(
                            f"refused archive member {name!r}: it would land outside {dest}"
                        )
                z.extractall(dest)
        else:
            raise ValueError(f"unknown archive kind {kind!r}")
    except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile) as e:
        raise DownloadError(f"{archive.name} is corrupt and could not be extracted ({e})") from e


def _fetch_file(
    file: RemoteFile,
    mirrors: list[str],
    downloads: Path,
    timeout: float,
    retries: int,
    backoff: float,
    progress: bool,
    tried: list[str],
) -> Path | None:
    """The verified file under `downloads` (kept from before, or fetched), or None."""
    final = downloads / file.name
    if final.exists() and verify(final, file.checksum):
        return final
    part = downloads / f"{file.name}.part"
    for url in [*(f"{mirror}/{file.name}" for mirror in mirrors), *file.urls]:
        restarted = False
        attempt = 0
        while True:
            try:
                _get(url, part, timeout, file.size, progress)
            except urllib.error.HTTPError as e:
                if (e.code >= 500 or e.code == 429) and attempt < retries:
                    time.sleep(backoff * 2**attempt)
                    attempt += 1
                    continue
                tried.append(f"{url}: HTTP {e.code} {e.reason}")
                part.unlink(missing_ok=True)
                break  # the mirror answered: try the next one
            except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                reason = getattr(e, "reason", None) or repr(e)
                if attempt < retries:
                    time.sleep(backoff * 2**attempt)
                    attempt += 1
                    continue
                tried.append(f"{url}: {reason} (after {retries + 1} attempts)")
                break
            except (ValueError, NotTheFile) as e:  # not an http URL, or a web page not the file
                tried.append(f"{url}: {e}")
                break
            if verify(part, file.checksum):
                os.replace(part, final)
                return final
            part.unlink(missing_ok=True)
            if not restarted:  # a resumed part may hold another copy's bytes: once from 0
                restarted = True
                continue
            tried.append(f"{url}: checksum mismatch (expected {file.checksum}); discarded")
            break
    part.unlink(missing_ok=True)
    return None


LINES = "lines:"  # an `expected` key counting a file's lines, not files


def count(folder: Path, pattern: str) -> int:
    """Files matching a glob pattern under `folder`; for `lines:FILE` (a list, a feature file),
    that file's number of non-empty lines."""
    if pattern.startswith(LINES):
        path = folder / pattern.removeprefix(LINES)
        return (
            sum(1 for line in path.read_text().splitlines() if line.strip())
            if path.is_file()
            else 0
        )
    return sum(1 for p in folder.glob(pattern) if p.is_file())


def layout_problems(source: Source, folder: Path) -> list[str]:
    """How the unpacked files differ from the published layout and counts (none: they fit)."""
    return [
        f"{pattern}: {found:,} found, {expected:,} expected"
        for pattern, expected in source.expected.items()
        if (found := count(folder, pattern)) != expected
    ]


def check_layout(source: Source, staging: Path) -> None:
    """Check the unpacked files against `source.expected`; an archive that wraps everything in
    one top-level folder (where none of the patterns matches) is unwrapped first. A mismatch is
    a DownloadError."""
    if not source.expected:
        return
    entries = [e for e in staging.iterdir() if e.name != "__MACOSX"]  # macOS zips' metadata
    wrapped = len(entries) == 1 and entries[0].is_dir()
    if wrapped and not any(count(staging, pattern) for pattern in source.expected):
        wrapper = staging / f".{entries[0].name}.wrapper"
        entries[0].rename(wrapper)
        for inner in wrapper.iterdir():
            inner.rename(staging / inner.name)
        wrapper.rmdir()
    problems = layout_problems(source, staging)
    if problems:
        raise DownloadError(
            f"{source.name}: the unpacked files do not have the published layout and counts ("
            + "; ".join(problems)
            + f"): not the release the loaders read, or an incomplete one. By hand: "
            f"{source.manual}"
        )


def _marker(source: Source, entries: Sequence[str]) -> str:
    """What a completed fetch records in `<dest>/.<source>.complete`: the files and their
    checksums, and the entries it put in place."""
    files = [f"{f.name} {f.checksum}" for f in source.files]
    return "\n".join([*files, "--", *sorted(entries)]) + "\n"


def _complete(source: Source, dest: Path) -> bool:
    """Whether an earlier fetch of these very files completed and its entries are all there."""
    marker = dest / f".{source.name}.complete"
    if not marker.is_file():
        return False
    text = marker.read_text()
    entries = text.split("--\n", 1)[1].split() if "--\n" in text else []
    return text == _marker(source, entries) and all((dest / e).exists() for e in entries)


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on `path` (runs sharing a root wait for each other); none on Windows."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetch(
    source: Source,
    root: str | Path,
    mirrors: Sequence[str] = (),
    timeout: float = 30.0,
    retries: int = 3,
    backoff: float = 1.0,
    progress: bool = True,
) -> Path:
    """Download, verify and unpack `source` under `root`; returns `root / source.dest`. Done
    once: a completed fetch leaves a marker, and later calls return without any network access.
    Runs sharing the root take turns (a file lock)."""
    root = Path(root)
    dest = root / source.dest
    if _complete(source, dest):
        return dest
    downloads = root / ".downloads" / source.name
    downloads.mkdir(parents=True, exist_ok=True)
    with _locked(downloads.parent / f"{source.name}.lock"):
        if _complete(source, dest):  # another run finished it while this one waited
            return dest
        return _fetch_locked(
            source,
            dest,
            downloads,
            mirrors_for(source, mirrors),
            (timeout, retries, backoff, progress),
        )


def _fetch_locked(source, dest, downloads, urls, options) -> Path:
    tried: list[str] = []
    fetched: list[Path] = []
    for file in source.files:
        path = _fetch_file(file, urls, downloads, *options, tried)
        if path is None:
            for leftover in (downloads, downloads.parent / f"{source.name}.lock"):
                with contextlib.suppress(OSError):
                    leftover.rmdir() if leftover.is_dir() else leftover.unlink()
            with contextlib.suppress(OSError):
                downloads.parent.rmdir()  # leave no empty folders behind
            raise DownloadError(
                f"could not download {file.name} of {source.name}. Tried:\n  "
                + "\n  ".join(tried)
                + f"\nBy hand: {source.manual}\nOr add a mirror: dataset.mirrors=[URL] or "
                f"{MIRRORS_ENV}=URL (files keep their names under it)."
            )
        fetched.append(path)
    # unpacked next to the destination, then each top-level entry renamed into place: a file
    # the loaders read is either absent or complete and verified (dest may be the root itself)
    created = [d for d in (dest, *dest.parents) if not d.exists()]  # removed again on failure
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest, prefix=f".{source.name}."))
    try:
        for file, path in zip(source.files, fetched, strict=True):
            try:
                if file.extract:
                    extract(path, file.extract, staging)
                else:
                    shutil.copy2(path, staging / file.name)
            except DownloadError:
                if file.checksum is None:  # unverified and unusable: fetch it again next time
                    path.unlink(missing_ok=True)
                raise
        try:
            check_layout(source, staging)
        except DownloadError:  # unverified archives of the wrong release: fetched again next time
            for file, path in zip(source.files, fetched, strict=True):
                if file.checksum is None:
                    path.unlink(missing_ok=True)
            raise
        entries = [entry.name for entry in staging.iterdir()]
        for name in entries:
            target = dest / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(staging / name, target)
        (dest / f".{source.name}.complete").write_text(_marker(source, entries))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in created:  # innermost first; only if still empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    shutil.rmtree(staging, ignore_errors=True)
    size = sum(p.stat().st_size for p in fetched)
    log.info(
        "downloaded %s: %d files, %.1f MB verified, in %s",
        source.name,
        len(fetched),
        size / 1e6,
        dest,
    )
    return dest


def fetch_first(
    alternatives: Sequence[Source], root: str | Path, mirrors: Sequence[str] = (), **options
) -> Path:
    """Fetch the first of `alternatives` (sources of the same data: the official archive, then
    re-packs of it) that succeeds; one already fetched is used as it is. When all fail, one
    DownloadError gives every source's URLs tried and reasons."""
    for source in alternatives:
        if _complete(source, Path(root) / source.dest):
            return Path(root) / source.dest
    failures = []
    for source in alternatives:
        try:
            return fetch(source, root, mirrors=mirrors, **options)
        except DownloadError as e:
            failures.append(str(e))
            if len(alternatives) > 1:
                log.warning(
                    "%s failed; %d other source(s) to try",
                    source.name,
                    len(alternatives) - len(failures),
                )
    if len(failures) == 1:
        raise DownloadError(failures[0])
    raise DownloadError(
        f"no source of this data could be fetched ({len(failures)} tried):\n- "
        + "\n- ".join(failures)
    )
