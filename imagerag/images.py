"""Image checks by content: the rules Azure AI Vision applies, enforced before anything is sent.

Pure (bytes in, facts or a rejection out). The extension is checked too, but the type comes
from the bytes: a text file renamed ``.jpg`` is refused.
"""

from __future__ import annotations

import io
import posixpath
import threading
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

from PIL import (
    Image,
    UnidentifiedImageError,
    _imaging,  # the C core: its allocator settings
)

# Vision limits: file under 20 MB, each side from 10 to 16,000 px.
MAX_BYTES = 20 * 1024 * 1024
MIN_SIDE = 10
MAX_SIDE = 16_000
# Decompression-bomb guard: a 16,000 x 16,000 PNG of one colour is a few hundred KB on disk and
# 768 MB decoded. JPEG decodes at 1/8 scale (draft mode), so only other formats need a budget.
MAX_DECODED_PIXELS = 64_000_000
# Pixels decoded at once in this process, all threads together (4 bytes each; callers count
# their working copies too): a dozen big PNGs arriving together decode one at a time instead
# of all at once, while small images decode side by side.
DECODE_BUDGET_PIXELS = MAX_DECODED_PIXELS
# PIL refuses images over 2x this many pixels before our own rules are asked; the rules above
# decide instead (a 16,000 x 16,000 JPEG is valid: it decodes at 1/8 scale).
Image.MAX_IMAGE_PIXELS = MAX_SIDE * MAX_SIDE
# Pillow allocates pixels in blocks (what PILLOW_BLOCK_SIZE sets). Blocks over glibc's largest
# mmap threshold (32 MB) are mapped and unmapped, so a big decode's memory goes back to the OS
# instead of staying in its thread's malloc arena: 16 activity threads would each keep one.
_imaging.set_block_size(64 * 1024 * 1024)

EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff")
_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "BMP": "image/bmp"}
_FORMATS |= {"TIFF": "image/tiff", "MPO": "image/jpeg"}  # MPO: JPEG with extra frames (phones)


class ImageRejected(ValueError):
    """The image breaks a rule. ``code`` is stable (see the constants below); the message says
    what was found and what is allowed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


EMPTY = "empty"
TOO_LARGE = "too_large"
UNSUPPORTED_EXTENSION = "unsupported_extension"
UNSUPPORTED_TYPE = "unsupported_type"
CORRUPT = "corrupt"
TOO_SMALL = "too_small"
TOO_BIG = "too_big"
DECOMPRESSION_BOMB = "decompression_bomb"


@dataclass(frozen=True, slots=True)
class ImageFacts:
    format: str  # PIL format name: JPEG, PNG, GIF, BMP, TIFF
    mime_type: str
    width: int
    height: int


def check_extension(path: str) -> None:
    extension = posixpath.splitext(path)[1].lower()
    if extension not in EXTENSIONS:
        raise ImageRejected(
            UNSUPPORTED_EXTENSION,
            f"file extension {extension or '(none)'!r} is not supported; use one of "
            + " ".join(EXTENSIONS),
        )


def check_size(size: int) -> None:
    """Before download: the blob's size alone can reject it."""
    if size == 0:
        raise ImageRejected(EMPTY, "the image file is empty")
    if size >= MAX_BYTES:
        raise ImageRejected(
            TOO_LARGE, f"the image is {size / 1048576:.1f} MB; it must be under 20 MB"
        )


def inspect_image(data: bytes, path: str) -> ImageFacts:
    """Check extension, size, type (by content), dimensions and that the pixels decode."""
    check_extension(path)
    check_size(len(data))
    with warnings.catch_warnings():
        # PIL warns (and above 2x its limit raises) about bombs; our own budget decides.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise ImageRejected(UNSUPPORTED_TYPE, _not_an_image(data)) from None
        except Image.DecompressionBombError as exc:  # far over any budget, refused at open
            message = f"the image is too large to decode: {exc}"
            raise ImageRejected(DECOMPRESSION_BOMB, message) from None
        except Exception as exc:  # PIL raises many types for damaged headers
            raise ImageRejected(CORRUPT, f"the image header cannot be read: {exc}") from None
        with image:
            facts = _facts(image)
            _decode(image, facts)
    return facts


def _facts(image: Image.Image) -> ImageFacts:
    mime_type = _FORMATS.get(image.format or "")
    if mime_type is None:
        raise ImageRejected(
            UNSUPPORTED_TYPE,
            f"the content is a {image.format} image; supported: JPEG, PNG, GIF, BMP, TIFF",
        )
    width, height = image.size
    if min(width, height) < MIN_SIDE:
        raise ImageRejected(
            TOO_SMALL, f"the image is {width}x{height} px; each side must be at least {MIN_SIDE}"
        )
    if max(width, height) > MAX_SIDE:
        raise ImageRejected(
            TOO_BIG, f"the image is {width}x{height} px; each side must be at most {MAX_SIDE:,}"
        )
    format_name = "JPEG" if image.format == "MPO" else str(image.format)
    return ImageFacts(format=format_name, mime_type=mime_type, width=width, height=height)


def _decode(image: Image.Image, facts: ImageFacts) -> None:
    """Decode the pixels (reduced where the format allows) so damaged files are caught here."""
    if facts.format == "JPEG":
        image.draft("RGB", (max(facts.width // 8, 1), max(facts.height // 8, 1)))
    elif facts.width * facts.height > MAX_DECODED_PIXELS:
        raise ImageRejected(
            DECOMPRESSION_BOMB,
            f"the {facts.format} image is {facts.width}x{facts.height} px "
            f"({facts.width * facts.height / 1e6:.0f} Mpx); {facts.format} images are decoded "
            f"in full, so at most {MAX_DECODED_PIXELS / 1e6:.0f} Mpx are accepted",
        )
    try:
        with decoding(image.size[0] * image.size[1]):
            image.load()
    except Exception as exc:  # truncated or damaged data: OSError, SyntaxError, ValueError, ...
        raise ImageRejected(CORRUPT, f"the image data is damaged: {exc}") from None


class PixelBudget:
    """Admits decodes while the pixels being decoded stay within a budget. One decode larger
    than the whole budget runs alone, so nothing waits forever."""

    def __init__(self, pixels: int) -> None:
        self.capacity = pixels
        self.available = pixels
        self.waiting = 0  # decodes waiting for pixels right now
        self._changed = threading.Condition()

    @contextmanager
    def take(self, pixels: int) -> Iterator[None]:
        need = min(max(pixels, 0), self.capacity)
        with self._changed:
            self.waiting += 1
            self._changed.wait_for(lambda: self.available >= need)
            self.waiting -= 1
            self.available -= need
        try:
            yield
        finally:
            with self._changed:
                self.available += need
                self._changed.notify_all()


_budget = PixelBudget(DECODE_BUDGET_PIXELS)


def decoding(pixels: int) -> AbstractContextManager[None]:
    """Hold ``pixels`` of the process-wide decode budget while the block decodes."""
    return _budget.take(pixels)


def mime_type(data: bytes) -> str | None:
    """The image type found in the bytes (from the header alone), or None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                return _FORMATS.get(image.format or "")
    except Exception:  # not an image PIL can read: no type
        return None


def _not_an_image(data: bytes) -> str:
    head = data[:512]
    if head.lstrip().startswith((b"{", b"[")):
        kind = "JSON"
    elif head.startswith(b"%PDF"):
        kind = "PDF"
    elif head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        kind = "WEBP image"
    elif _looks_like_text(head):
        kind = "text file"
    else:
        kind = "file of an unknown type"
    return f"the content is a {kind}, not an image; supported: JPEG, PNG, GIF, BMP, TIFF"


def _looks_like_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
