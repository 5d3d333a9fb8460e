"""The limits that keep one request from taking the app down, unit by unit: what a query may
cost, signed image links, the decode pixel budget, the JPEG size rule."""

from __future__ import annotations

import io
import threading

import pytest
from PIL import Image

from imagerag import images, retrieval
from imagerag.adapters import local_vectorizer
from imagerag.image_links import ImageLinks

# --------------------------------------------------------------------------- query cost


def test_the_searched_text_is_the_first_words_of_the_turn() -> None:
    text = retrieval.query_text(["colour " * 3_600_000])
    assert text.split() == ["colour"] * retrieval.MAX_QUERY_WORDS
    assert len(text) <= retrieval.MAX_QUERY_CHARS


def test_the_searched_text_stops_at_the_character_cap_on_a_word_boundary() -> None:
    text = retrieval.query_text(["x" * 30 + " " + "y" * 990 + " tail"])
    assert text == "x" * 30
    assert retrieval.query_text(["  a  ", "", "b c "]) == "a b c"


def test_an_image_only_turn_searches_no_text() -> None:
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}]
    assert retrieval.extract_query(messages).text == ""


# --------------------------------------------------------------------------- image links


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def parts(link: str) -> tuple[str, str]:
    query = dict(pair.split("=", 1) for pair in link.split("?", 1)[1].split("&"))
    return query["exp"], query["sig"]


def test_a_signed_link_opens_its_image_until_it_expires() -> None:
    clock = Clock()
    links = ImageLinks(b"k" * 32, ttl_s=60, clock=clock)
    link = links.sign("http://app/api/images/", "images", "cats/tabby 1.jpg")
    assert link.startswith("http://app/api/images/images/cats/tabby%201.jpg?exp=")
    expires, signature = parts(link)
    assert links.verify("images", "cats/tabby 1.jpg", expires, signature)
    clock.now += 61
    assert not links.verify("images", "cats/tabby 1.jpg", expires, signature)


@pytest.mark.parametrize(
    ("container", "path", "expires_delta"),
    [
        ("images", "cats/other.jpg", 0),
        ("work", "cats/tabby.jpg", 0),
        ("images", "cats/tabby.jpg", 1),
    ],
)
def test_a_link_opens_nothing_else(container: str, path: str, expires_delta: int) -> None:
    links = ImageLinks(b"k" * 32, clock=Clock())
    expires, signature = parts(links.sign("r/", "images", "cats/tabby.jpg"))
    assert not links.verify(container, path, str(int(expires) + expires_delta), signature)


def test_links_of_another_key_or_garbage_are_refused() -> None:
    clock = Clock()
    expires, signature = parts(ImageLinks(b"a" * 32, clock=clock).sign("r/", "c", "p.jpg"))
    assert not ImageLinks(b"b" * 32, clock=clock).verify("c", "p.jpg", expires, signature)
    assert not ImageLinks(clock=clock).verify("c", "p.jpg", "not-a-number", signature)
    assert not ImageLinks(clock=clock).verify("c", "p.jpg", expires, "")


# --------------------------------------------------------------------------- decode budget


def test_decodes_over_the_budget_wait_for_each_other() -> None:
    budget = images.PixelBudget(100)
    order: list[str] = []
    release_first = threading.Event()
    first_in = threading.Event()

    def first() -> None:
        with budget.take(60):
            order.append("first in")
            first_in.set()
            release_first.wait()
            order.append("first out")

    def second() -> None:
        with budget.take(60):
            order.append("second in")

    a = threading.Thread(target=first)
    a.start()
    first_in.wait()
    b = threading.Thread(target=second)
    b.start()
    while budget.waiting == 0:  # the second decode is now blocked on the budget
        threading.Event().wait(0.001)
    assert order == ["first in"] and budget.available == 40
    release_first.set()
    a.join()
    b.join()
    assert order == ["first in", "first out", "second in"]
    assert budget.available == 100


def test_a_decode_larger_than_the_whole_budget_runs_alone() -> None:
    budget = images.PixelBudget(100)
    with budget.take(10_000):
        assert budget.available == 0
    assert budget.available == 100


def test_a_big_rgba_png_is_box_reduced_before_any_conversion() -> None:
    image = Image.new("RGBA", (4000, 3000), (10, 20, 30, 128))
    size = local_vectorizer._shorter_side_size(image.size, local_vectorizer.IMAGE_SIZE)
    reduced = local_vectorizer._reduced(image, size)
    # 3000 -> 224 is 13.4x: a 4x box reduce leaves 3.3x (<= ~REDUCING_GAP) to the resize.
    assert reduced.size == (1000, 750)
    assert reduced.mode == "RGBA"
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    assert min(local_vectorizer.decode(buffer.getvalue()).size) == local_vectorizer.IMAGE_SIZE


# --------------------------------------------------------------------------- JPEG size rule


def test_a_16000_px_wide_jpeg_is_a_valid_image() -> None:
    # 179 Mpx: over PIL's own bomb limit, within Azure AI Vision's 16,000 px per side. JPEG
    # is decoded at 1/8 scale, so it needs no pixel budget.
    buffer = io.BytesIO()
    Image.new("L", (16_000, 11_200), 128).save(buffer, format="JPEG", quality=20)
    facts = images.inspect_image(buffer.getvalue(), "wide.jpg")
    assert (facts.width, facts.height, facts.mime_type) == (16_000, 11_200, "image/jpeg")


def test_a_png_over_the_decoded_pixel_budget_is_still_refused() -> None:
    buffer = io.BytesIO()
    Image.new("1", (9_000, 9_000), 0).save(buffer, format="PNG")
    with pytest.raises(images.ImageRejected) as refused:
        images.inspect_image(buffer.getvalue(), "huge.png")
    assert refused.value.code == images.DECOMPRESSION_BOMB


def test_the_type_is_found_from_the_bytes() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20)).save(buffer, format="GIF")
    assert images.mime_type(buffer.getvalue()) == "image/gif"
    assert images.mime_type(b'{"not": "an image"}') is None
