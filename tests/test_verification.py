"""Verification thumbnails and the re-ranking of image hits (imagerag.verification)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter
from sample_images import picture

from imagerag import verification
from imagerag.ports import SearchHit


def texture(seed: int, size: tuple[int, int] = (600, 300)) -> Image.Image:
    """A photo-like texture (blurred noise): every part of it looks like every other part to
    a descriptor of what a picture shows."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(noise).filter(ImageFilter.GaussianBlur(3))


def jpeg(image: Image.Image, quality: int = 30) -> Image.Image:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))


def centre_crop(image: Image.Image, side: float) -> Image.Image:
    width, height = image.size
    w, h = round(width * side), round(height * side)
    left, top = (width - w) // 2, (height - h) // 2
    return image.crop((left, top, left + w, top + h))


def quarters(image: Image.Image) -> list[Image.Image]:
    width, height = image.size
    return [
        image.crop((x, y, x + width // 2, y + height // 2))
        for x in (0, width // 2)
        for y in (0, height // 2)
    ]


def thumb(image: Image.Image) -> bytes:
    return verification.thumbnail(image)


def hit(name: str, score: float, thumbnail: bytes | None) -> SearchHit:
    return SearchHit(name, score, name, None, None, f"{name}.png", thumbnail)


# --------------------------------------------------------------------------- thumbnails


@pytest.mark.parametrize(
    ("size", "shape"),
    [((400, 300), (28, 37)), ((300, 400), (37, 28)), ((1000, 100), (28, 56)), ((28, 28), (28, 28))],
)
def test_thumbnail_shorter_side_and_aspect_cap(size: tuple[int, int], shape: tuple[int, int]):
    data = thumb(picture(1, size))
    assert (data[0], data[1]) == shape
    assert len(data) == 2 + shape[0] * shape[1]
    assert verification.pixels(data).shape == shape


@pytest.mark.parametrize("data", [b"", b"\x1c", bytes((28, 28)) + b"\0" * 10, bytes((0, 5))])
def test_damaged_thumbnails_are_refused(data: bytes) -> None:
    with pytest.raises(verification.ThumbnailError):
        verification.pixels(data)


# --------------------------------------------------------------------------- matching


def test_a_crop_of_a_texture_matches_its_own_tile_not_the_next_one() -> None:
    whole = texture(3)
    tile, neighbour = whole.crop((0, 0, 300, 300)), whole.crop((300, 0, 600, 300))
    query = jpeg(centre_crop(tile, 0.65))
    own, other = verification.match_scores(thumb(query), [thumb(tile), thumb(neighbour)])
    assert own >= 0.9 and own >= verification.VERIFIED_NCC
    assert other < verification.VERIFIED_NCC


@pytest.mark.parametrize(
    "edit",
    [
        lambda image: centre_crop(image, 0.6),
        lambda image: image.resize((image.width // 3, image.height // 3), Image.Resampling.BICUBIC),
        lambda image: image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        lambda image: centre_crop(image.rotate(6, Image.Resampling.BICUBIC), 0.85),
    ],
    ids=["crop-60", "third-scale", "mirror", "rotated-6"],
)
def test_edited_copies_match_their_original_above_its_quarters(edit) -> None:
    original = picture(4, (480, 360))
    candidates = [thumb(original)] + [thumb(part) for part in quarters(original)]
    scores = verification.match_scores(thumb(jpeg(edit(original))), candidates)
    assert scores[0] >= verification.VERIFIED_NCC
    assert scores[0] > scores[1:].max()


def test_a_query_that_fits_no_candidate_scores_minus_one() -> None:
    wide = thumb(picture(5, (1000, 100)))  # 28 x 56: taller than a 28 px high candidate
    tall = thumb(picture(6, (100, 1000)))
    assert verification.match_scores(tall, [wide])[0] == -1.0


# --------------------------------------------------------------------------- re-ranking


def test_verified_hits_move_first_and_keep_their_cosine() -> None:
    whole = texture(7)
    tiles = [whole.crop((x, 0, x + 200, 300)) for x in (0, 200, 400)]
    query = thumb(jpeg(centre_crop(tiles[2], 0.7)))
    hits = [hit(f"t{i}", 0.9 - 0.1 * i, thumb(tile)) for i, tile in enumerate(tiles)]
    ranked = verification.reranked(query, hits)
    assert [h.id for h in ranked] == ["t2", "t0", "t1"]  # unverified ones keep vector order
    assert [h.score for h in ranked] == [0.7, 0.9, 0.8]


def test_hits_without_thumbnails_are_left_as_they_are() -> None:
    hits = [hit("a", 0.9, None), hit("b", 0.8, None)]
    assert verification.reranked(thumb(picture(8)), hits) == hits


def test_only_the_first_candidates_are_verified() -> None:
    original = picture(9)
    hits = [hit(f"x{i}", 0.5, thumb(picture(100 + i))) for i in range(verification.CANDIDATES)]
    hits.append(hit("original", 0.4, thumb(original)))  # beyond the verified window
    ranked = verification.reranked(thumb(jpeg(original)), hits)
    assert ranked[-1].id == "original"
