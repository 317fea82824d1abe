"""Decode one spread image file into 8-bit RGB, refusing anything that is not a whole image.

A microscope export folder sees half-written files, wrong extensions and the odd huge scan:
each of those becomes one InputImageError naming the file, never a half-processed image.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from chromowatch.errors import InputImageError
from chromowatch.records import Spread
from chromowatch.settings import IngestSettings

log = logging.getLogger(__name__)

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_BMP_MAGIC = b"BM"


def sniff_format(head: bytes) -> str | None:
    """The image format from the file's first bytes, whatever its name says."""
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    if head[:4] in _TIFF_MAGICS:
        return "tiff"
    if head.startswith(_BMP_MAGIC):
        return "bmp"
    return None


# Start-of-frame markers (baseline, progressive, lossless, arithmetic...): they carry the
# components' sampling factors. 0xC4 (Huffman tables), 0xC8 and 0xCC are not frames.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone, with no length after them: TEM and the restart markers.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
# Segments read before giving up: a real header has a few dozen; a file of fill bytes or
# junk would otherwise be walked byte by byte.
_JPEG_MAX_SEGMENTS = 1000


def jpeg_chroma_subsampled(data: bytes) -> bool:
    """Whether a JPEG stores colour at a lower resolution than brightness (4:2:0, 4:2:2).

    The stain's own channel is then rebuilt from coarse colour and is blurred; segmentation
    reads darkness from luma instead. Read from the frame header: some component has fewer
    samples than the first (luma). False for anything that is not such a JPEG, never an error.
    An EXIF thumbnail's own frame header sits inside its APP1 segment and is skipped.
    """
    if not data.startswith(_JPEG_MAGIC):
        return False
    pos = 2
    for _ in range(_JPEG_MAX_SEGMENTS):
        pos = data.find(b"\xff", pos)  # libjpeg, too, skips junk between segments
        if pos < 0 or pos + 1 >= len(data):
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker == 0xDA or pos + 4 > len(data):  # scan data: no frame header before it
            return False
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2:
            return False
        if marker in _JPEG_SOF:
            return _frame_subsampled(data[pos + 4 : pos + 2 + length])
        pos += 2 + length
    return False


def _frame_subsampled(frame: bytes) -> bool:
    """Whether a JPEG frame header (its bytes after the length) gives some colour component
    fewer samples than the first (luma); False for a grey frame or a short, broken one."""
    if len(frame) < 6:
        return False
    count = frame[5]
    if count < 3 or len(frame) < 6 + 3 * count:
        return False
    factors = [frame[7 + 3 * k] for k in range(count)]
    luma_h, luma_v = factors[0] >> 4, factors[0] & 0x0F
    return any((f >> 4) < luma_h or (f & 0x0F) < luma_v for f in factors[1:])


def _check_complete(path: Path, fmt: str, data: bytes) -> None:
    """Refuse truncated files: decoders happily return the top half of a cut JPEG."""
    if fmt == "png" and b"IEND" not in data[-16:]:
        raise InputImageError(
            str(path),
            "truncated PNG (no IEND chunk at the end)",
            hint="the file may still be copying; wait for it to finish, or re-export it",
        )
    if fmt == "jpeg" and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise InputImageError(
            str(path),
            "truncated JPEG (no end-of-image marker)",
            hint="the file may still be copying; wait for it to finish, or re-export it",
        )


def _probe_size(path: Path, fmt: str, data: bytes) -> tuple[int, int]:
    """Width and height from the header alone, so a decompression bomb is never decoded.

    The first bytes named the format (`sniff_format`); where the image library still cannot
    read the header, what follows them is damaged. Its own words (which name a memory
    address, not the file) go to the debug log only.
    """
    Image.MAX_IMAGE_PIXELS = None  # our own limit applies, checked by the caller
    try:
        with warnings.catch_warnings():  # e.g. "Corrupt EXIF data" of a cut TIFF, on stderr
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                return int(im.size[0]), int(im.size[1])
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        log.debug("%s: the image library cannot read the %s header: %s", path, fmt, exc)
        name = fmt.upper()
        raise InputImageError(
            str(path),
            f"not a readable {name} image (the header says {name} but the data after it is "
            "damaged)",
            hint="re-export the image from the microscope software; the other files are not "
            "affected",
        ) from None


def to_rgb8(image: np.ndarray, path: str) -> tuple[np.ndarray, int, int]:
    """(RGB uint8 image, source bit depth, source channels) from what OpenCV decoded (BGR order).

    16-bit data is scaled by the bit depth the values actually use (12-bit cameras write
    0..4095 into 16-bit files), so exposure is kept rather than stretched per image.
    """
    if image.dtype == np.uint8:
        depth = 8
        scaled = image
    elif image.dtype == np.uint16:
        depth = 16
        top = int(image.max()) if image.size else 0
        bits = min(16, max(8, math.ceil(math.log2(top + 1)))) if top else 8
        scaled = np.clip(image.astype(np.float32) * (255.0 / (2**bits - 1)) + 0.5, 0, 255)
        scaled = scaled.astype(np.uint8)
    else:
        raise InputImageError(
            path,
            f"unsupported pixel type {image.dtype}",
            hint="export the spread as an 8- or 16-bit PNG, TIFF or JPEG",
        )
    channels = 1 if scaled.ndim == 2 else int(scaled.shape[2])
    if channels == 1:
        rgb = cv2.cvtColor(scaled.reshape(scaled.shape[:2]), cv2.COLOR_GRAY2RGB)
    elif channels == 3:
        rgb = cv2.cvtColor(scaled, cv2.COLOR_BGR2RGB)
    elif channels == 4:
        rgb = cv2.cvtColor(scaled, cv2.COLOR_BGRA2RGB)
    else:
        raise InputImageError(path, f"unsupported number of channels ({channels})")
    return np.ascontiguousarray(rgb), depth, channels


@contextlib.contextmanager
def _opencv_quiet() -> Iterator[None]:
    """OpenCV's decoders print their own lines (`TIFF_Error ... Read error at scanline`) on
    stderr for a damaged file; the InputImageError raised here is the one message."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def decode_bytes(data: bytes, path: Path, settings: IngestSettings) -> np.ndarray:
    """Decoded pixels (OpenCV order, native depth) after format, completeness and size checks."""
    if not data:
        raise InputImageError(str(path), "empty file (0 bytes)")
    fmt = sniff_format(data[:16])
    if fmt is None:
        raise InputImageError(
            str(path),
            "not an image (content is not PNG, JPEG, TIFF or BMP, whatever the name says)",
            hint="remove it from the input, or export the spread as PNG, TIFF or JPEG",
        )
    _check_complete(path, fmt, data)
    width, height = _probe_size(path, fmt, data)
    if width * height > settings.max_pixels:
        raise InputImageError(
            str(path),
            f"image too large: {width}x{height} = {width * height:,} pixels "
            f"(limit ingest.max_pixels = {settings.max_pixels:,})",
            hint="raise ingest.max_pixels if this is a genuine spread",
        )
    buf = np.frombuffer(data, dtype=np.uint8)
    with _opencv_quiet():
        image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise InputImageError(
            str(path), f"corrupt {fmt.upper()} file (the decoder could not read the pixels)"
        )
    return image


def read_bytes(path: Path, settings: IngestSettings) -> bytes:
    """The file's bytes, refusing what is missing, unreadable, not a file, or too big."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputImageError(str(path), "file not found", hint="check the path") from None
    except OSError as exc:
        raise InputImageError(str(path), f"cannot be read ({exc.strerror})") from None
    if not path.is_file():
        raise InputImageError(str(path), "not a regular file", hint="give an image file")
    limit = settings.max_file_mb * 1024 * 1024
    if st.st_size > limit:
        raise InputImageError(
            str(path),
            f"file too large: {st.st_size / 1048576:.0f} MiB "
            f"(limit ingest.max_file_mb = {settings.max_file_mb:g})",
            hint="raise ingest.max_file_mb if this is a genuine spread",
        )
    try:
        with path.open("rb") as fh:
            return fh.read()
    except PermissionError:
        raise InputImageError(
            str(path),
            "permission denied",
            hint="make the file readable by the user chromowatch runs as",
        ) from None
    except OSError as exc:
        raise InputImageError(str(path), f"cannot be read ({exc.strerror or exc})") from None


def read_spread(path: Path | str, settings: IngestSettings) -> Spread:
    """Read and decode one spread; raises InputImageError with the file's name on any problem."""
    path = Path(path)
    data = read_bytes(path, settings)
    image = decode_bytes(data, path, settings)
    rgb, depth, channels = to_rgb8(image, str(path))
    log.debug("decoded %s: %dx%d, %d-bit, %d channel(s)", path, rgb.shape[1], rgb.shape[0],
              depth, channels)
    return Spread(
        path=os.fspath(path),
        rgb=rgb,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        source_bit_depth=depth,
        source_channels=channels,
        chroma_subsampled=jpeg_chroma_subsampled(data),
    )


def list_images(paths: list[Path], settings: IngestSettings) -> list[Path]:
    """Files named on the command line, and image files below named folders, sorted."""
    exts = {e.lower() for e in settings.extensions}
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found.extend(
                sorted(
                    f
                    for f in p.rglob("*")
                    if f.is_file() and f.suffix.lower() in exts and not f.name.startswith(".")
                )
            )
        else:
            found.append(p)
    return found


def file_sha256(path: Path, settings: IngestSettings) -> str | None:
    """The content hash `read_spread` would give, read in chunks without decoding; None when
    the file cannot be read or is too large (reading it properly then says why)."""
    try:
        if path.stat().st_size > settings.max_file_mb * 1024 * 1024:
            return None
        with path.open("rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None
