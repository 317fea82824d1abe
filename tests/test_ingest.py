"""ingest: every supported format decodes to RGB uint8; every bad file gives its own message."""

from __future__ import annotations

import os
import warnings
from io import BytesIO
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from chromowatch.errors import InputImageError
from chromowatch.ingest import (
    jpeg_chroma_subsampled,
    list_images,
    read_spread,
    sniff_format,
    to_rgb8,
)
from chromowatch.settings import IngestSettings

SETTINGS = IngestSettings()


def _pattern(h: int = 40, w: int = 60) -> np.ndarray:
    bgr = np.zeros((h, w, 3), np.uint8)
    bgr[..., 0] = 200  # blue in OpenCV order
    bgr[5:15, 5:25] = (10, 20, 250)  # a red block
    return bgr


def _write(path: Path, image: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), image)
    return path


def test_png_rgb_is_converted_from_bgr(tmp_path: Path) -> None:
    spread = read_spread(_write(tmp_path / "a.png", _pattern()), SETTINGS)
    assert spread.rgb.dtype == np.uint8 and spread.rgb.shape == (40, 60, 3)
    assert tuple(spread.rgb[0, 0]) == (0, 0, 200)  # blue ends up in the last channel
    assert tuple(spread.rgb[10, 10]) == (250, 20, 10)
    assert spread.source_bit_depth == 8 and spread.source_channels == 3
    assert len(spread.sha256) == 64 and spread.size_bytes == (tmp_path / "a.png").stat().st_size


def test_jpeg_and_tiff_and_bmp(tmp_path: Path) -> None:
    for name in ("a.jpg", "a.tif", "a.bmp"):
        spread = read_spread(_write(tmp_path / name, _pattern()), SETTINGS)
        assert spread.rgb.shape == (40, 60, 3)


def test_jpeg_colour_resolution_is_read_from_the_frame_header(tmp_path: Path) -> None:
    """A JPEG that keeps colour at half resolution (OpenCV's and most cameras' default,
    4:2:0; also 4:2:2, progressive) is marked, so segmentation reads darkness from luma;
    full-resolution colour, grey JPEGs and other formats are not."""
    sampling = cv2.IMWRITE_JPEG_SAMPLING_FACTOR
    cases = {
        "default.jpg": ([], True),
        "422.jpg": ([sampling, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422], True),
        "progressive.jpg": ([cv2.IMWRITE_JPEG_PROGRESSIVE, 1], True),
        "444.jpg": ([sampling, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444], False),
    }
    for name, (params, expected) in cases.items():
        path = tmp_path / name
        assert cv2.imwrite(str(path), _pattern(), params)
        assert jpeg_chroma_subsampled(path.read_bytes()) is expected, name
        assert read_spread(path, SETTINGS).chroma_subsampled is expected, name
    grey = _write(tmp_path / "grey.jpg", _pattern()[..., 1])
    assert read_spread(grey, SETTINGS).chroma_subsampled is False
    assert read_spread(_write(tmp_path / "a.png", _pattern()), SETTINGS).chroma_subsampled is False
    assert jpeg_chroma_subsampled(b"\xff\xd8\xff\xe0\x00") is False


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def _frame(*factors: int, marker: int = 0xC0) -> bytes:
    header = bytes([8]) + (16).to_bytes(2, "big") * 2 + bytes([len(factors)])
    return _segment(marker, header + b"".join(bytes([k + 1, f, 0]) for k, f in enumerate(factors)))


_FRAME_420 = _frame(0x22, 0x11, 0x11)


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("4:2:0 after tables", _segment(0xC4, bytes(20)) + _FRAME_420, True),
        ("fill bytes and a restart marker", b"\xff\xff\xff\xd0" + _frame(0x21, 0x11, 0x11), True),
        ("junk after a segment", _segment(0xE0, b"JFIF\x00") + bytes(2) + _FRAME_420, True),
        ("EXIF thumbnail 4:2:0, image 4:4:4",
         _segment(0xE1, b"Exif\x00\x00\xff\xd8" + _FRAME_420) + _frame(0x11, 0x11, 0x11), False),
        ("all components 2x2", _frame(0x22, 0x22, 0x22), False),
        ("CMYK", _frame(0x11, 0x11, 0x11, 0x11), False),
        ("frame cut inside", _FRAME_420[:-4], False),
        ("scan before any frame", _segment(0xDA, bytes(8)) + _FRAME_420, False),
        ("length 0", b"\xff\xe0\x00\x00" + _FRAME_420, False),
        ("a flood of fill bytes", b"\xff" * 100_000 + _FRAME_420, False),
    ],
)
def test_jpeg_frame_header_parsing(name: str, data: bytes, expected: bool) -> None:
    """Crafted headers: never an error, and only the image's own frame header counts."""
    assert jpeg_chroma_subsampled(b"\xff\xd8" + data) is expected, name


def test_16_bit_grey_uses_the_bits_actually_used(tmp_path: Path) -> None:
    grey = np.full((20, 30), 4095, np.uint16)  # a 12-bit camera's white
    grey[:10] = 2048
    spread = read_spread(_write(tmp_path / "g16.png", grey), SETTINGS)
    assert spread.source_bit_depth == 16 and spread.source_channels == 1
    assert spread.rgb[15, 0].tolist() == [255, 255, 255]
    assert spread.rgb[0, 0].tolist() == [128, 128, 128]


def test_16_bit_rgb_tiff(tmp_path: Path) -> None:
    img = (_pattern().astype(np.uint16) * 257)
    spread = read_spread(_write(tmp_path / "c16.tiff", img), SETTINGS)
    assert spread.rgb[10, 10].tolist() == [250, 20, 10]


def test_to_rgb8_refuses_float() -> None:
    with pytest.raises(InputImageError, match="unsupported pixel type float32"):
        to_rgb8(np.zeros((4, 4), np.float32), "x.tif")


def test_to_rgb8_drops_alpha() -> None:
    rgb, _, channels = to_rgb8(np.zeros((4, 4, 4), np.uint8), "x.png")
    assert rgb.shape == (4, 4, 3) and channels == 4


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.png", b"", "empty file"),
        ("text.png", b"hello, this is not an image at all", "not an image"),
        ("pdf.jpg", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "not an image"),
    ],
)
def test_bad_content_is_named(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputImageError, match=message) as info:
        read_spread(path, SETTINGS)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_files_are_refused(tmp_path: Path, suffix: str) -> None:
    noisy = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    full = _write(tmp_path / f"full{suffix}", noisy).read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(full[: len(full) // 2])
    with pytest.raises(InputImageError, match="truncated"):
        read_spread(cut, SETTINGS)


def test_corrupt_body_is_refused(tmp_path: Path) -> None:
    full = _write(tmp_path / "ok.png", _pattern()).read_bytes()
    bad = tmp_path / "bad.png"
    bad.write_bytes(full[:40] + b"\x00" * (len(full) - 52) + full[-12:])
    with pytest.raises(InputImageError):
        read_spread(bad, SETTINGS)


def test_pixel_limit_is_checked_before_decoding(tmp_path: Path) -> None:
    path = _write(tmp_path / "big.png", np.zeros((100, 100), np.uint8))
    with pytest.raises(InputImageError, match=r"too large.*ingest.max_pixels"):
        read_spread(path, IngestSettings(max_pixels=5000))


def test_file_size_limit(tmp_path: Path) -> None:
    path = _write(tmp_path / "big.png", np.random.default_rng(1).integers(
        0, 255, (300, 300), dtype=np.uint8))
    with pytest.raises(InputImageError, match=r"ingest\.max_file_mb"):
        read_spread(path, IngestSettings(max_file_mb=0.01))


def test_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputImageError, match="file not found"):
        read_spread(tmp_path / "nope.png", SETTINGS)
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(InputImageError, match="not a regular file"):
        read_spread(tmp_path / "dir.png", SETTINGS)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "locked.png", _pattern())
    path.chmod(0)
    with pytest.raises(InputImageError, match="permission denied"):
        read_spread(path, SETTINGS)


def test_sniff_ignores_the_name() -> None:
    assert sniff_format(b"\x89PNG\r\n\x1a\n....") == "png"
    assert sniff_format(b"\xff\xd8\xff\xe0") == "jpeg"
    assert sniff_format(b"II*\x00") == "tiff"
    assert sniff_format(b"GIF89a") is None


def test_list_images_walks_folders_and_skips_hidden(tmp_path: Path) -> None:
    (tmp_path / "s" / "deep").mkdir(parents=True)
    for name in ("s/b.PNG", "s/deep/a.tif", "s/.hidden.png", "s/notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    found = list_images([tmp_path / "s"], SETTINGS)
    assert [p.name for p in found] == ["b.PNG", "a.tif"]


@pytest.mark.parametrize("body", [bytes(300), b"\x00\x00\x00\x0dIHDR" + bytes(range(200))],
                         ids=["zeros", "broken-ihdr"])
def test_damaged_png_says_what_the_file_is_and_what_to_do(tmp_path: Path, body: bytes) -> None:
    """A valid PNG signature (and an IEND at the end) with garbage between: the message names
    the format and the damage, not the image library's words with a memory address."""
    path = tmp_path / "damaged.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body + b"\x00\x00\x00\x00IEND\xaeB`\x82")
    with pytest.raises(InputImageError) as caught:
        read_spread(path, SETTINGS)
    error = caught.value
    assert error.path == str(path)
    assert "not a readable PNG image" in error.problem and "damaged" in error.problem
    assert "0x" not in str(error) and "BytesIO" not in str(error)
    assert error.hint is not None and "re-export" in error.hint


def test_a_truncated_tiff_gives_one_message_and_no_opencv_noise(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """OpenCV's own `TIFF_Error ... Read error at scanline` lines went to stderr beside
    chromowatch's message (issue 16)."""
    pixels = (np.random.default_rng(1).random((400, 300, 3)) * 255).astype(np.uint8)
    buf = BytesIO()
    Image.fromarray(pixels).save(buf, format="TIFF")
    path = tmp_path / "cut.tif"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) * 6 // 10])
    capfd.readouterr()
    with pytest.raises(InputImageError, match="TIFF"):
        read_spread(path, IngestSettings())
    err = capfd.readouterr().err
    assert "TIFF_Error" not in err and "grfmt_tiff" not in err and "imdecode" not in err, err
    # cut in its header, PIL warned "Corrupt EXIF data" (on stderr, outside pytest)
    ok, encoded = cv2.imencode(".tif", pixels)
    assert ok
    path.write_bytes(encoded.tobytes()[: encoded.size // 2])
    with warnings.catch_warnings(), pytest.raises(InputImageError, match="TIFF"):
        warnings.simplefilter("error")
        read_spread(path, IngestSettings())
