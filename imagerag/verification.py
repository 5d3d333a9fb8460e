"""Verification of image hits: the nearest vectors re-ordered by matching the pictures.

A global descriptor finds the right neighbourhood, but it describes what a picture shows, not
which picture it is: tiles of one texture (grass, gravel, a star field) or a photo and its own
quarters look alike to it. On bench/retrieval_quality.py's set (120 tiles of 34 real photos,
each indexed with its own four quarters), 85% of the descriptor's first answers were right
and 58% of crops'; nearly all the misses were another tile of the same photo or one of the
original's quarters, and the original was within the first 40 for every query.

So each indexed picture also keeps a small grey thumbnail (:func:`thumbnail`: shorter side
THUMBNAIL_SIDE px, longer side at most MAX_ASPECT times that, high-passed; ~1 KB). A query's
thumbnail is matched against each of the first CANDIDATES hits' as a template, at SCALES (the
query as if it covered 60-100% of the candidate's shorter side) and mirrored: the match is the
best normalised cross-correlation (NCC) over every position, computed for all candidates at
once with FFTs. Hits whose match reaches VERIFIED_NCC move to the front, best first (match +
COSINE_WEIGHT x cosine); the others keep their vector order behind them, so a query that
matches no picture (another photo of the same place) is ranked as before.

Each hit's score stays its cosine similarity, which the strictness floors read; its ``match``
is the NCC. The list's best match also passes strictness whatever its cosine when it reaches
SURE_MATCH for the strictness (0.6 at the default 3) and leads the next best match by
SURE_MARGIN: a query that matches no indexed picture tends to match several about as well.

Why high-passed (the thumbnail minus its Gaussian blur, sigma HIGH_PASS_SIGMA px): smooth
pictures (a sky, a blurred background) correlate well with any other smooth picture at this
size, so raw thumbnails matched some document of another photo at 0.8 or more for 18% of the
queries; high-passed, the structure decides. Measured in-process on that set (600 edited
copies, JPEG quality 30, the retrieval code the chat endpoint runs, default strictness):

    thumbnails      sure match  margin  R@1    R@5    another photo cited  out-of-scope answered
    raw             0.95        -       0.978  0.988  1.3%                 2.8%
    raw             0.8         -       0.985  0.995  1.3%                 24%
    high-pass 4 px  0.6         -       0.983  0.997  1.3%                 14%
    high-pass 4 px  0.7         -       0.980  0.992  1.3%                 4.8%
    high-pass 4 px  0.6         0.1     0.985  0.997  1.3%                 4.8%
    high-pass 4 px  0.6         0.2     0.985  0.997  1.3%                 2.8%   <- kept

("out-of-scope answered": copies of the photos of an index that leaves a quarter of the
photos out, answered with a citation instead of "not in your data".) Verification costs
~12 ms per image query on 2 cores (40 candidates).

numpy is imported inside functions: Azure deployments (no thumbnails) never load it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from PIL import Image, ImageChops, ImageFilter

from imagerag.ports import SearchHit

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

THUMBNAIL_SIDE = 28
MAX_ASPECT = 2
SCALES = (1.0, 0.92, 0.85, 0.78, 0.71, 0.65, 0.6)
CANDIDATES = 40
VERIFIED_NCC = 0.5
# Per strictness 1..5: the best match that passes whatever the cosine, when it leads the
# next best by SURE_MARGIN (see sure_matches).
SURE_MATCH = (0.4, 0.5, 0.6, 0.7, 0.8)
SURE_MARGIN = 0.2
HIGH_PASS_SIGMA = 4.0
COSINE_WEIGHT = 0.3
# Thumbnail bytes: height, width, then the grey pixels row by row.
_HEADER = 2
_LONGEST = THUMBNAIL_SIDE * MAX_ASPECT


class ThumbnailError(ValueError):
    """Bytes that are not a thumbnail made by :func:`thumbnail`."""


def thumbnail(image: Image.Image) -> bytes:
    """The verification thumbnail of a decoded picture (any mode, any size)."""
    width, height = image.size
    scale = THUMBNAIL_SIDE / min(width, height)
    size = (
        min(_LONGEST, max(THUMBNAIL_SIDE, round(width * scale))),
        min(_LONGEST, max(THUMBNAIL_SIDE, round(height * scale))),
    )
    grey = image.convert("L").resize(size, Image.Resampling.BOX)
    blurred = grey.filter(ImageFilter.GaussianBlur(HIGH_PASS_SIGMA))
    detail = ImageChops.subtract(grey, blurred, offset=128)  # (grey - blurred) + 128, clipped
    return bytes((size[1], size[0])) + detail.tobytes()


def pixels(data: bytes) -> npt.NDArray[np.float32]:
    """A thumbnail's (height, width) pixels as float32; ThumbnailError for other bytes."""
    import numpy as np

    if len(data) < _HEADER:
        raise ThumbnailError("a thumbnail has a 2-byte header")
    height, width = data[0], data[1]
    if not (0 < height <= _LONGEST and 0 < width <= _LONGEST) or len(data) != (
        _HEADER + height * width
    ):
        raise ThumbnailError(f"not a thumbnail: {height}x{width} px in {len(data)} bytes")
    values = np.frombuffer(data, dtype=np.uint8, offset=_HEADER)
    return values.reshape(height, width).astype(np.float32)


def match_scores(query: bytes, candidates: Sequence[bytes]) -> npt.NDArray[np.float32]:
    """Best NCC of the query thumbnail (at SCALES, and mirrored) inside each candidate
    thumbnail, in [-1, 1]; -1 where the query fits at no scale (another shape)."""
    import numpy as np

    asked = pixels(query)
    pictures = [pixels(data) for data in candidates]
    best = np.full(len(pictures), -1.0, dtype=np.float32)
    # Landscape and portrait thumbnails apart: each group's FFTs are only as large as its own
    # longest side needs (a 28 x 37 picture on a 56 x 56 canvas would cost 3x).
    wide = np.array([picture.shape[0] <= picture.shape[1] for picture in pictures], dtype=bool)
    for group in (np.flatnonzero(wide), np.flatnonzero(~wide)):
        if group.size:
            best[group] = _group_scores(asked, [pictures[i] for i in group])
    return best


def _group_scores(
    asked: npt.NDArray[np.float32], pictures: list[npt.NDArray[np.float32]]
) -> npt.NDArray[np.float32]:
    import numpy as np

    shapes = np.array([picture.shape for picture in pictures], dtype=np.int64)
    # FFT sizes with small prime factors only: a prime size (a 37 px side) costs more.
    rows_max, cols_max = (_fast_size(int(v)) for v in shapes.max(axis=0))
    canvas = np.zeros((len(pictures), rows_max, cols_max), dtype=np.float32)
    for i, picture in enumerate(pictures):
        canvas[i, : picture.shape[0], : picture.shape[1]] = picture
    spectrum = np.fft.rfft2(canvas)
    sums, squares = _integral(canvas), _integral(canvas * canvas)
    best = np.full(len(pictures), -1.0, dtype=np.float32)
    for scale in SCALES:
        factor = scale * THUMBNAIL_SIDE / min(asked.shape)
        height, width = (max(2, round(side * factor)) for side in asked.shape)
        if height > shapes[:, 0].max() or width > shapes[:, 1].max():
            continue
        template = _resized(asked, height, width)
        template -= template.mean()
        norm = float(np.linalg.norm(template))
        if norm == 0:
            continue  # a flat query matches nothing
        # Correlation of the candidates with the template and its mirror image, by FFT
        # (circular, but the positions kept never wrap around).
        kernels = np.zeros((2, 1, rows_max, cols_max), dtype=np.float32)
        kernels[0, 0, :height, :width] = template / norm
        kernels[1, 0, :height, :width] = template[:, ::-1] / norm
        product = spectrum[None] * np.conj(np.fft.rfft2(kernels))
        correlation = np.fft.irfft2(product, s=(rows_max, cols_max))
        rows, cols = rows_max - height + 1, cols_max - width + 1
        area = height * width
        local_sum = _window(sums, height, width)
        local_var = _window(squares, height, width) - local_sum * local_sum / area
        local_std = np.sqrt(np.maximum(local_var, 1.0))  # flat regions: no division by ~0
        fits = (np.arange(rows)[None, :, None] <= (shapes[:, 0] - height)[:, None, None]) & (
            np.arange(cols)[None, None, :] <= (shapes[:, 1] - width)[:, None, None]
        )
        ncc = np.where(fits, correlation[:, :, :rows, :cols] / local_std, -1.0)
        best = np.maximum(best, ncc.reshape(2, len(pictures), -1).max(axis=(0, 2)))
    return best


def verified(hit: SearchHit) -> bool:
    """Whether the hit's picture matched the query's (it was moved to the front)."""
    return (hit.match or -1.0) >= VERIFIED_NCC


def sure_matches(hits: list[SearchHit], strictness: int) -> set[str]:
    """Ids of the hits that are the query's picture beyond doubt, which pass strictness
    whatever their cosine: the list's best match, when it reaches the strictness's
    SURE_MATCH and leads the next best match by SURE_MARGIN."""
    matches = sorted((hit.match for hit in hits if hit.match is not None), reverse=True)
    if not matches or matches[0] < SURE_MATCH[strictness - 1]:
        return set()
    if len(matches) > 1 and matches[0] - matches[1] < SURE_MARGIN:
        return set()  # two pictures match about as well: neither is sure
    return {hit.id for hit in hits if hit.match == matches[0]}


def reranked(query: bytes, hits: list[SearchHit]) -> list[SearchHit]:
    """``hits`` (vector order) with the verified ones first (see the module docstring), each
    of the first CANDIDATES with its ``match``."""
    window = [i for i, hit in enumerate(hits[:CANDIDATES]) if hit.thumbnail]
    if not window:
        return hits
    matches = match_scores(query, [hits[i].thumbnail or b"" for i in window])
    matched = {i: replace(hits[i], match=float(m)) for i, m in zip(window, matches, strict=True)}
    first = [i for i in window if verified(matched[i])]
    first.sort(key=lambda i: -((matched[i].match or 0.0) + COSINE_WEIGHT * matched[i].score))
    moved = set(first)
    rest = [matched.get(i, hit) for i, hit in enumerate(hits) if i not in moved]
    return [matched[i] for i in first] + rest


def _fast_size(size: int) -> int:
    """The smallest n >= size whose prime factors are 2, 3 and 5."""
    n = size
    while True:
        rest = n
        for prime in (2, 3, 5):
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return n
        n += 1


def _integral(values: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    import numpy as np

    padded = np.zeros((values.shape[0], values.shape[1] + 1, values.shape[2] + 1))
    padded[:, 1:, 1:] = values.astype(np.float64).cumsum(1).cumsum(2)
    return padded


def _window(integral: npt.NDArray[np.float64], height: int, width: int) -> npt.NDArray[np.float64]:
    """Sums over every height x width window (top-left corners), from an integral image."""
    rows, cols = integral.shape[1] - height, integral.shape[2] - width
    return (
        integral[:, height : height + rows, width : width + cols]
        - integral[:, :rows, width : width + cols]
        - integral[:, height : height + rows, :cols]
        + integral[:, :rows, :cols]
    )


def _resized(values: npt.NDArray[np.float32], height: int, width: int) -> npt.NDArray[np.float32]:
    import numpy as np

    if values.shape == (height, width):
        return values.copy()
    grey = Image.fromarray(values.astype(np.uint8))
    return np.asarray(grey.resize((width, height), Image.Resampling.BOX), dtype=np.float32)
