"""Procedural test pictures: distinct, photo-like enough to exercise decoding and embedding.

No image data can be downloaded here, so each picture is drawn from a seed: a two-colour
gradient background, a few dozen filled shapes and some noise. Different seeds give clearly
different pictures; the same seed always gives the same one.
"""

from __future__ import annotations

import io
import random

from PIL import Image, ImageDraw, ImageFilter


def picture(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    rng = random.Random(seed)
    width, height = size
    top = _colour(rng)
    bottom = _colour(rng)
    gradient = Image.linear_gradient("L").resize(size)
    image = Image.composite(Image.new("RGB", size, bottom), Image.new("RGB", size, top), gradient)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(12, 30)):
        x0, y0 = rng.uniform(-0.2, 1.0) * width, rng.uniform(-0.2, 1.0) * height
        w, h = rng.uniform(0.05, 0.5) * width, rng.uniform(0.05, 0.5) * height
        box = (x0, y0, x0 + w, y0 + h)
        shape = rng.choice(("ellipse", "rectangle", "line", "polygon"))
        if shape == "ellipse":
            draw.ellipse(box, fill=_colour(rng))
        elif shape == "rectangle":
            draw.rectangle(box, fill=_colour(rng))
        elif shape == "line":
            draw.line(box, fill=_colour(rng), width=rng.randint(2, 12))
        else:
            points = [
                (rng.uniform(0, width), rng.uniform(0, height)) for _ in range(rng.randint(3, 6))
            ]
            draw.polygon(points, fill=_colour(rng))
    noise = Image.effect_noise(size, rng.uniform(8, 30)).convert("RGB")
    image = Image.blend(image, noise, 0.08)
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.2)))


def encode(image: Image.Image, fmt: str = "JPEG", **options: object) -> bytes:
    """The picture as file bytes (JPEG, PNG, GIF, BMP, TIFF, ...)."""
    buffer = io.BytesIO()
    if fmt.upper() in ("JPEG", "JPG") and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    image.save(buffer, format="JPEG" if fmt.upper() == "JPG" else fmt.upper(), **options)
    return buffer.getvalue()


def picture_bytes(seed: int, fmt: str = "JPEG", size: tuple[int, int] = (320, 240)) -> bytes:
    return encode(picture(seed, size), fmt)


def altered_copy(data: bytes, *, crop: float = 0.85, quality: int = 70) -> bytes:
    """What a user might paste as a query: the same picture, centre-cropped and re-encoded."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    width, height = image.size
    dx, dy = int(width * (1 - crop) / 2), int(height * (1 - crop) / 2)
    cropped = image.crop((dx, dy, width - dx, height - dy))
    return encode(cropped, "JPEG", quality=quality)


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))
