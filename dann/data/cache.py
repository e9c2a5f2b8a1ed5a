"""Tensor caches for generated or decoded data: one `.pt` file plus a `.sha256` sidecar.

A cache is used only when its checksum and its stored `meta` both match; anything else (missing,
truncated, corrupt, built with other settings) is rebuilt. Writes are atomic: a temp file in the
same directory, then `os.replace`, so a killed run never leaves a half-written cache behind.
"""

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write_bytes(path: Path, write: Callable[[Path], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read_valid(path: Path, meta: dict) -> dict[str, torch.Tensor] | None:
    sidecar = path.with_suffix(path.suffix + ".sha256")
    if not path.exists():
        return None
    problem = None
    if not sidecar.exists() or sidecar.read_text().strip() != sha256_file(path):
        problem = "checksum mismatch (corrupt or truncated)"
    else:
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            if payload.get("meta") != meta:
                problem = f"built with other settings {payload.get('meta')} != {meta}"
        except Exception as e:  # unreadable despite a matching checksum
            problem = f"unreadable ({type(e).__name__}: {e})"
    if problem:
        log.warning("Cache %s is %s; rebuilding it.", path, problem)
        return None
    return payload["tensors"]


def cached_tensors(
    path: Path, meta: dict, build: Callable[[], dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Return the tensors cached at `path` for `meta`, building and caching them if needed."""
    path = Path(path)
    tensors = _read_valid(path, meta)
    if tensors is not None:
        return tensors
    tensors = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(path, lambda tmp: torch.save({"meta": meta, "tensors": tensors}, tmp))
    sidecar = path.with_suffix(path.suffix + ".sha256")
    _atomic_write_bytes(sidecar, lambda tmp: tmp.write_text(sha256_file(path) + "\n"))
    return tensors
