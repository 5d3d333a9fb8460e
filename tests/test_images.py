"""Image checks by content (imagerag.images)."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image
from sample_images import encode, picture, picture_bytes

from imagerag import images
from imagerag.images import ImageRejected, inspect_image


@pytest.mark.parametrize(
    ("fmt", "path", "mime"),
    [
        ("JPEG", "a.jpg", "image/jpeg"),
        ("JPEG", "a.JPEG", "image/jpeg"),
        ("PNG", "dir/a.png", "image/png"),
        ("GIF", "a.gif", "image/gif"),
        ("BMP", "a.bmp", "image/bmp"),
        ("TIFF", "a.tif", "image/tiff"),
        ("TIFF", "a.tiff", "image/tiff"),
    ],
)
def test_supported_images_pass(fmt: str, path: str, mime: str) -> None:
    facts = inspect_image(picture_bytes(1, fmt, size=(64, 48)), path)
    assert (facts.mime_type, facts.width, facts.height) == (mime, 64, 48)


def test_type_comes_from_content_not_extension() -> None:
    # A PNG named .jpg is still a PNG: accepted, and reported as what it is.
    assert inspect_image(picture_bytes(1, "PNG"), "a.jpg").format == "PNG"


def _rejected(data: bytes, path: str = "a.jpg") -> ImageRejected:
    with pytest.raises(ImageRejected) as caught:
        inspect_image(data, path)
    return caught.value


def test_text_renamed_jpg_is_refused() -> None:
    error = _rejected(b"just some notes\nnot a picture\n")
    assert error.code == images.UNSUPPORTED_TYPE
    assert "text file" in error.message


def test_webp_is_refused_by_content() -> None:
    buffer = io.BytesIO()
    picture(1, (32, 32)).save(buffer, "WEBP")
    error = _rejected(buffer.getvalue(), "a.png")
    assert error.code == images.UNSUPPORTED_TYPE
    assert "WEBP" in error.message


def test_truncated_jpeg_is_corrupt() -> None:
    data = picture_bytes(2, "JPEG", size=(400, 300))
    error = _rejected(data[: len(data) // 2])
    assert error.code == images.CORRUPT


def test_damaged_png_is_corrupt() -> None:
    data = bytearray(picture_bytes(2, "PNG"))
    data[200:260] = b"\x00" * 60  # inside IDAT: CRC and zlib stream both break
    assert _rejected(bytes(data), "a.png").code == images.CORRUPT


@pytest.mark.parametrize(
    ("size", "code"),
    [((9, 9), images.TOO_SMALL), ((9, 100), images.TOO_SMALL), ((16_001, 10), images.TOO_BIG)],
)
def test_dimensions_are_checked(size: tuple[int, int], code: str) -> None:
    error = _rejected(encode(Image.new("L", size), "PNG"), "a.png")
    assert error.code == code
    assert f"{size[0]}x{size[1]}" in error.message


def test_ten_pixels_is_the_smallest_side_allowed() -> None:
    assert inspect_image(encode(Image.new("RGB", (10, 10)), "PNG"), "a.png").width == 10


def test_decompression_bomb_png_is_refused_without_decoding() -> None:
    # 16,000 x 16,000 greyscale PNG of zeros: ~250 KB on disk, 256 Mpx decoded.
    side = 16_000
    raw = zlib.compress((b"\x00" + b"\x00" * side) * side, 9)
    data = b"\x89PNG\r\n\x1a\n" + _chunk(
        b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    )
    data += _chunk(b"IDAT", raw) + _chunk(b"IEND", b"")
    assert len(data) < 1_000_000
    error = _rejected(data, "bomb.png")
    assert error.code == images.DECOMPRESSION_BOMB
    assert "16000x16000" in error.message and "256 Mpx" in error.message


def test_png_over_the_decode_budget_is_refused() -> None:
    # 9,000 x 8,000 = 72 Mpx: within PIL's own limit, over ours.
    raw = zlib.compress((b"\x00" + b"\x00" * 9_000) * 8_000, 9)
    header = struct.pack(">IIBBBBB", 9_000, 8_000, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", raw)
    error = _rejected(data + _chunk(b"IEND", b""), "big.png")
    assert error.code == images.DECOMPRESSION_BOMB
    assert "72 Mpx" in error.message


def test_big_jpeg_is_decoded_at_reduced_scale() -> None:
    data = encode(Image.new("RGB", (12_000, 6_000), (200, 10, 10)), "JPEG", quality=50)
    assert inspect_image(data, "big.jpg").width == 12_000


@pytest.mark.parametrize(
    ("size", "code"), [(0, images.EMPTY), (20 * 1024 * 1024, images.TOO_LARGE)]
)
def test_size_is_checked_before_download(size: int, code: str) -> None:
    with pytest.raises(ImageRejected) as caught:
        images.check_size(size)
    assert caught.value.code == code


def test_size_just_under_20_mb_passes() -> None:
    images.check_size(20 * 1024 * 1024 - 1)


@pytest.mark.parametrize("path", ["a.webp", "a.txt", "a", "dir.jpg/a"])
def test_extension_is_checked(path: str) -> None:
    error = _rejected(picture_bytes(1), path)
    assert error.code == images.UNSUPPORTED_EXTENSION


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
