"""Files that must appear whole or not at all, and where a spread's crop images live.

Every file chromowatch writes for another process or a later run (models, crops, reports,
metrics) goes through `atomic_write_bytes`: a crash or power cut leaves the old file or the new
one, never half of either.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (the folder's entry), where the file system allows."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `path.part`, fsync, rename over `path`, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    try:
        with part.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    _fsync_folder(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_replace(part: Path, path: Path) -> None:
    """Publish a file another writer (a library) made at `part`: fsync it, rename, fsync the
    folder."""
    with part.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(part, path)
    _fsync_folder(path.parent)


def pixels_sha256(rgb: np.ndarray) -> str:
    """The content of an image, not of its file: the same pixels saved with other PNG
    settings, or stripped of metadata, hash the same."""
    header = "x".join(str(n) for n in rgb.shape) + f":{rgb.dtype.str}:"
    return hashlib.sha256(header.encode() + np.ascontiguousarray(rgb).tobytes()).hexdigest()


def file_size(path: str | Path) -> int | None:
    """A file's size in bytes, None when it is gone or not a regular file (a failure record
    keeps what size the bad file had)."""
    try:
        p = Path(path)
        return p.stat().st_size if p.is_file() else None
    except OSError:
        return None


def crop_dir(crops_root: Path, sha256: str) -> Path:
    """The folder of one spread's crop images: <crops>/<first two hex digits>/<sha256>/."""
    return crops_root / sha256[:2] / sha256


def write_crop_png(directory: Path, index: int, rgb: np.ndarray) -> str:
    """Write crop `index` of a spread as <directory>/NNNN.png; returns its path."""
    import cv2

    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode crop {index} as PNG")
    target = directory / f"{index:04d}.png"
    atomic_write_bytes(target, encoded.tobytes())
    return str(target)


def remove_files(paths: Iterable[str | Path], root: Path | None = None) -> int:
    """Remove files (one already gone is fine), then the folders they leave empty, up to
    `root` (kept; without it only the files' own folders); returns how many files."""
    removed = 0
    folders: set[Path] = set()
    for name in paths:
        path = Path(name)
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass
        folders.add(path.parent)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        while True:
            try:
                folder.rmdir()
            except OSError:  # not empty, or gone: leave it
                break
            if root is None or folder.parent == root or not folder.parent.is_relative_to(root):
                break
            folder = folder.parent
    return removed
