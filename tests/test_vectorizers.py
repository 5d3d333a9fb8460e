"""The Vectorizer port's adapters: the local EfficientNet model and Azure AI Vision (against
the local fake in fakes.vision_service)."""

from __future__ import annotations

import io
import logging
import math
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import numpy as np
import pytest
import requests
from fakes.vision_service import FakeVisionService, image_vector, text_vector
from PIL import Image
from sample_images import altered_copy, encode, picture, picture_bytes

from imagerag import verification
from imagerag.adapters import local_vectorizer
from imagerag.adapters.azure_vision import AzureVisionVectorizer, RatePacer
from imagerag.adapters.local_vectorizer import LocalVectorizer, preprocess
from imagerag.adapters.retry_after import parse_retry_after
from imagerag.cpu_share import CpuShare
from imagerag.ports import VectorizerError, VectorizerInputError, VectorizerUnavailableError

REPO_ROOT = Path(__file__).resolve().parent.parent
KEY = "fake-vision-key-0123456789"
TOKEN = "fake-entra-token-abcdef"


def cosine(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector]


# =========================================================================== local model


@pytest.fixture(scope="module")
def local() -> LocalVectorizer:
    return LocalVectorizer()


def test_local_model_info(local: LocalVectorizer) -> None:
    info = local.model
    assert (info.name, info.dimensions, info.supports_text) == ("efficientnet-lite0", 1280, False)
    assert local_vectorizer.WEIGHTS_TAG in info.version
    assert local_vectorizer.PREPROCESSING_TAG in info.version


def test_importing_the_local_adapter_does_not_import_torch() -> None:
    code = (
        "import sys, imagerag.adapters.local_vectorizer as m; m.LocalVectorizer(); "
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, 'eager import'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


def test_local_vector_is_unit_length_and_deterministic(local: LocalVectorizer) -> None:
    data = picture_bytes(1)
    first = local.vectorize_image(data)
    second = local.vectorize_image(data)
    assert len(first) == 1280
    assert math.isclose(math.sqrt(sum(v * v for v in first)), 1.0, rel_tol=1e-5)
    assert np.allclose(first, second, atol=1e-6)


def test_local_formats_of_one_picture_embed_together(local: LocalVectorizer) -> None:
    image = picture(2)
    vectors = {
        fmt: local.vectorize_image(encode(image, fmt)) for fmt in ("PNG", "GIF", "BMP", "TIFF")
    }
    vectors["JPEG"] = local.vectorize_image(encode(image, "JPEG", quality=90))
    other = local.vectorize_image(picture_bytes(3, "PNG"))
    for fmt, vector in vectors.items():
        assert cosine(vector, vectors["PNG"]) > 0.9, fmt
        assert cosine(vector, vectors["PNG"]) > cosine(other, vectors["PNG"]) + 0.05, fmt


def test_local_altered_copies_find_their_original(local: LocalVectorizer) -> None:
    originals = [picture_bytes(seed) for seed in range(100, 112)]
    queries = [altered_copy(data) for data in originals]
    with ThreadPoolExecutor(8) as pool:
        index = np.array(list(pool.map(local.vectorize_image, originals)))
        asked = np.array(list(pool.map(local.vectorize_image, queries)))
    nearest = (asked @ index.T).argmax(axis=1)
    assert nearest.tolist() == list(range(len(originals)))


def test_local_concurrent_calls_are_batched_and_match_sequential() -> None:
    vectorizer = LocalVectorizer(max_batch=16, max_wait_s=0.05)
    images = [picture_bytes(seed, "PNG", size=(160, 120)) for seed in range(200, 216)]
    sequential = [vectorizer.vectorize_image(data) for data in images]
    passes, embedded = vectorizer.forward_passes, vectorizer.images_embedded
    start = threading.Barrier(len(images))

    def call(data: bytes) -> list[float]:
        start.wait()
        return vectorizer.vectorize_image(data)

    with ThreadPoolExecutor(len(images)) as pool:
        concurrent = list(pool.map(call, images))

    assert vectorizer.images_embedded - embedded == len(images)
    assert vectorizer.forward_passes - passes < len(images)
    assert np.allclose(concurrent, sequential, atol=1e-4)


def test_local_interactive_request_does_not_wait_for_a_batch_to_fill() -> None:
    vectorizer = LocalVectorizer(max_batch=16, max_wait_s=600.0)
    pool = ThreadPoolExecutor(1)
    try:
        query = pool.submit(vectorizer.vectorize_image, picture_bytes(5), interactive=True)
        assert len(query.result(timeout=120)) == 1280  # not after max_wait_s
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def test_local_batch_failure_fails_its_callers_and_worker_survives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vectorizer = LocalVectorizer(max_wait_s=0.0)
    data = picture_bytes(4)

    def broken(model: object, batch: object) -> object:
        raise RuntimeError("simulated out of memory")

    monkeypatch.setattr(local_vectorizer, "embed_batch", broken)
    with pytest.raises(VectorizerError, match="simulated out of memory"):
        vectorizer.vectorize_image(data)
    monkeypatch.undo()
    assert len(vectorizer.vectorize_image(data)) == 1280


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image at all", picture_bytes(5, "PNG")[:300], b"\xff\xd8\xff\xe0" + b"\0" * 64],
    ids=["empty", "text", "truncated-png", "bad-jpeg"],
)
def test_local_undecodable_bytes_are_input_errors(local: LocalVectorizer, data: bytes) -> None:
    with pytest.raises(VectorizerInputError):
        local.vectorize_image(data)


def test_local_warm_runs_a_pass_on_the_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker thread's pass: where a GPU's cuDNN plans are cached (per thread).
    threads: list[str] = []
    real = local_vectorizer.embed_batch

    def recorded(model: object, batch: np.ndarray) -> np.ndarray:
        threads.append(threading.current_thread().name)
        return real(model, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(local_vectorizer, "embed_batch", recorded)
    vectorizer = LocalVectorizer()
    vectorizer.warm()
    [thread] = threads
    assert thread.startswith("local-vectorizer") and vectorizer.forward_passes == 1


def test_local_warm_on_a_gpu_plans_each_batch_size_on_the_worker_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # cuDNN plans are per shape and per thread: the worker meets each padded size once, here.
    passes: list[tuple[str, int]] = []

    def recorded(model: object, batch: np.ndarray) -> np.ndarray:
        passes.append((threading.current_thread().name, len(batch)))
        return np.zeros((len(batch), 1280), dtype=np.float32)

    monkeypatch.setattr(local_vectorizer, "embed_batch", recorded)
    monkeypatch.setattr(local_vectorizer, "runs_on_gpu", lambda model: True)
    monkeypatch.setattr(local_vectorizer, "decoder_processes", lambda model: 0)
    vectorizer = LocalVectorizer(max_batch=12)
    vectorizer.warm()
    assert passes == [("local-vectorizer", size) for size in (1, 2, 4, 8, 12)]
    assert vectorizer.forward_passes == 5


def test_local_has_no_text_encoder(local: LocalVectorizer) -> None:
    with pytest.raises(VectorizerInputError, match="no text encoder"):
        local.vectorize_text("a red bicycle")


def test_local_traced_pass_gives_the_eager_vectors_bit_for_bit() -> None:
    import torch

    model = local_vectorizer.load_model()
    assert local_vectorizer.traced(model) is not None  # else every pass would hold the GIL
    normalize = torch.nn.functional.normalize
    for count in (1, 3):
        pixels = np.stack([preprocess(picture_bytes(seed)) for seed in range(30, 30 + count)])
        # NHWC crops seen as NCHW (channels-last in memory), scaled as the Lite models expect.
        inputs = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() - 127.0) / 128.0
        with torch.inference_mode():
            coarse = torch.nn.functional.interpolate(
                inputs, size=(128, 128), mode="bilinear", antialias=True
            )
            pooled = [
                normalize(local_vectorizer.rmac(model.extract_features(view)), dim=1)
                for view in (inputs, coarse)
            ]
            eager = normalize(pooled[0] + pooled[1], dim=1).numpy()
        assert np.array_equal(local_vectorizer.embed_batch(model, pixels), eager)


def test_local_embedding_holds_the_vector_and_the_thumbnail_of_one_decode(
    local: LocalVectorizer,
) -> None:
    data = picture_bytes(9, size=(400, 300))
    embedding = local.embed_image(data)
    assert np.allclose(embedding.vector, local.vectorize_image(data), atol=1e-6)
    decoded = local_vectorizer.decode(data)
    assert embedding.thumbnail == verification.thumbnail(decoded)
    assert embedding.thumbnail is not None and embedding.thumbnail[:2] == bytes((28, 37))


def test_rmac_regions_of_the_model_feature_map() -> None:
    regions = local_vectorizer.rmac_regions(7, 7)
    # level 1: the whole map; level 2: 2 x 2 squares of 5; level 3: 3 x 3 squares of 4
    assert regions[0] == (0, 0, 7)
    assert sorted(side for _, _, side in regions) == [4] * 9 + [5] * 4 + [7]
    assert {(top, left) for top, left, side in regions if side == 5} == {
        (0, 0),
        (0, 2),
        (2, 0),
        (2, 2),
    }
    for h, w in ((7, 7), (7, 10), (10, 7), (1, 1)):
        for top, left, side in local_vectorizer.rmac_regions(h, w):
            assert 0 <= top and top + side <= h and 0 <= left and left + side <= w


def test_rmac_sums_the_normalised_maxima_of_its_regions() -> None:
    import torch

    rng = np.random.default_rng(5)
    features = rng.random((2, 6, 7, 7), dtype=np.float32)
    expected = np.zeros((2, 6), dtype=np.float32)
    for top, left, side in local_vectorizer.rmac_regions(7, 7):
        region = features[:, :, top : top + side, left : left + side].max(axis=(2, 3))
        expected += region / np.linalg.norm(region, axis=1, keepdims=True)
    pooled = local_vectorizer.rmac(torch.from_numpy(features)).numpy()
    assert np.allclose(pooled, expected, atol=1e-5)


def test_local_interactive_and_bulk_vectors_are_the_same(local: LocalVectorizer) -> None:
    data = picture_bytes(6)
    assert np.allclose(local.vectorize_image(data, interactive=True), local.vectorize_image(data))


# --------------------------------------------------------------------------- priority lanes


class GatedModel:
    """Stands in for the model: records the labels of each forward pass; the first pass
    holds the worker until ``release`` is set. Each label comes back as its vector's first
    component, so callers can check they got their own vector."""

    def __init__(self) -> None:
        self.passes: list[list[int]] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def embed(self, model: object, batch: np.ndarray) -> np.ndarray:
        labels = [int(value) for value in batch[:, 0, 0, 0]]
        self.passes.append(labels)
        if len(self.passes) == 1:
            self.entered.set()
            assert self.release.wait(30)
        vectors = np.zeros((len(labels), local_vectorizer.DIMENSIONS), np.float32)
        vectors[:, 0] = labels
        return vectors


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> Iterator[GatedModel]:
    """The local vectorizer's model replaced by a GatedModel; the picture bytes are a label."""
    model = GatedModel()
    monkeypatch.setattr(local_vectorizer, "load_model", lambda: None)
    monkeypatch.setattr(local_vectorizer, "runs_on_gpu", lambda model: False)
    monkeypatch.setattr(local_vectorizer, "embed_batch", model.embed)
    monkeypatch.setattr(
        local_vectorizer,
        "prepared",
        lambda data: (np.full((3, 2, 2), int(data), np.uint8), b""),
    )
    yield model
    model.release.set()  # never leave a worker blocked


class Lanes:
    """Calls a LocalVectorizer from threads and waits (polling a condition) for them to queue."""

    def __init__(self, vectorizer: LocalVectorizer, model: GatedModel) -> None:
        self.vectorizer = vectorizer
        self.model = model
        self.pool = ThreadPoolExecutor(64)
        self.calls: dict[int, Future[list[float]]] = {}

    def call(self, label: int, *, interactive: bool = False) -> None:
        data = str(label).encode()
        self.calls[label] = self.pool.submit(
            self.vectorizer.vectorize_image, data, interactive=interactive
        )

    def hold_worker(self) -> None:
        self.call(0)
        assert self.model.entered.wait(30)

    def until_waiting(self, interactive: int, bulk: int) -> None:
        deadline = threading.Event()
        for _ in range(30_000):
            if self.vectorizer.waiting == (interactive, bulk):
                return
            deadline.wait(0.001)
        raise AssertionError(f"waiting {self.vectorizer.waiting}, not {(interactive, bulk)}")

    def release(self) -> list[list[int]]:
        self.model.release.set()
        for label, future in self.calls.items():
            assert future.result(30)[0] == label  # each caller got its own vector
        self.pool.shutdown()
        return self.model.passes


def test_local_interactive_request_jumps_the_bulk_queue(gated: GatedModel) -> None:
    share = CpuShare(clock=lambda: 50.0)
    lanes = Lanes(LocalVectorizer(max_batch=16, max_wait_s=0.0, share=share, workers=1), gated)
    lanes.hold_worker()  # a bulk pass is running
    for label in range(1, 17):
        lanes.call(label)  # a full bulk batch queues behind it ...
    lanes.until_waiting(0, 16)
    lanes.call(100, interactive=True)  # ... then a chat query arrives
    lanes.until_waiting(1, 16)
    passes = lanes.release()
    assert passes[:2] == [[0], [100]]  # served next, in a pass of its own
    # While queries are recent, bulk passes are short: a query waits for one of these.
    assert [len(p) for p in passes[2:]] == [4, 4, 4, 4]
    assert sorted(sum(passes[2:], [])) == list(range(1, 17))


def test_local_cpu_passes_run_side_by_side_one_per_core(
    gated: GatedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each of the 2 cores' workers must be inside a pass at the same moment: were the passes
    # one after the other, the barrier would break and the callers would get its error.
    monkeypatch.setattr(local_vectorizer, "cpu_count", lambda: 2)
    together = threading.Barrier(2, timeout=30)
    threads: list[str] = []

    def side_by_side(model: object, batch: np.ndarray) -> np.ndarray:
        threads.append(threading.current_thread().name)
        if len(threads) <= 2:  # the first two passes (passes take at most 2 of the 4 images)
            together.wait()
        return np.zeros((len(batch), local_vectorizer.DIMENSIONS), np.float32)

    monkeypatch.setattr(local_vectorizer, "embed_batch", side_by_side)
    vectorizer = LocalVectorizer(max_wait_s=0.0)
    with ThreadPoolExecutor(4) as pool:
        vectors = list(pool.map(vectorizer.vectorize_image, [b"1", b"2", b"3", b"4"]))
    assert len(vectors) == 4 and vectorizer.images_embedded == 4
    assert set(threads[:2]) == {"local-vectorizer-1", "local-vectorizer-2"}


def test_local_worker_whose_batch_another_took_waits_for_the_next(
    gated: GatedModel, caplog: pytest.LogCaptureFixture
) -> None:
    # One worker waits for a second image to fill its pass; the second image wakes the other
    # worker (a condition wakes its waiters in turn), which takes both. The first must go
    # back to waiting, not run (and fail) a pass of nothing when its wait ends.
    # (The waits leave the callers ~0.9 s to queue within a pass's wait, however busy the
    # machine; the outcome checked does not depend on which worker wakes.)
    gated.release.set()
    lanes = Lanes(LocalVectorizer(max_batch=2, max_wait_s=1.0, workers=2), gated)
    lanes.call(1)
    lanes.until_waiting(0, 1)
    threading.Event().wait(0.1)  # the first worker is now waiting for its pass to fill
    lanes.call(2)
    assert lanes.calls[2].result(30)[0] == 2
    threading.Event().wait(1.2)  # past the first worker's wait
    lanes.call(3)
    lanes.call(4)
    assert lanes.release() == [[1, 2], [3, 4]]
    assert "failed" not in caplog.text


def test_local_cpu_passes_take_two_images_by_default(gated: GatedModel) -> None:
    lanes = Lanes(LocalVectorizer(max_wait_s=0.0, workers=1), gated)
    lanes.hold_worker()
    for label in range(1, 6):
        lanes.call(label)
    lanes.until_waiting(0, 5)
    assert lanes.release() == [[0], [1, 2], [3, 4], [5]]


@pytest.mark.parametrize(
    "settings", [{"max_batch": 0}, {"workers": 0}, {"interactive_streak": 0}, {"max_wait_s": -1}]
)
def test_local_vectorizer_settings_out_of_range_are_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LocalVectorizer(**settings)  # type: ignore[arg-type]


def test_local_models_run_each_pass_on_one_thread_on_the_cpu() -> None:
    # In a fresh process, whichever model loads first: the text model here, then a pass of
    # the image model on a thread of its own (torch applies the count per thread).
    script = (
        "import threading, torch\n"
        "from imagerag.adapters.local_text_embedder import LocalTextEmbedder\n"
        "from imagerag.adapters import local_vectorizer as m\n"
        "LocalTextEmbedder().embed(['a red bicycle'])\n"
        "seen = []\n"
        "def image_pass():\n"
        "    m.load_model(); seen.append(torch.get_num_threads())\n"
        "t = threading.Thread(target=image_pass); t.start(); t.join()\n"
        "print(torch.get_num_threads(), seen[0])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    assert done.stdout.split()[-2:] == ["1", "1"]


def test_local_gpu_passes_run_at_power_of_two_sizes(
    gated: GatedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_vectorizer, "runs_on_gpu", lambda model: True)
    monkeypatch.setattr(local_vectorizer, "decoder_processes", lambda model: 0)
    lanes = Lanes(LocalVectorizer(max_batch=16, max_wait_s=0.0, workers=1), gated)
    lanes.hold_worker()
    for label in range(1, 6):
        lanes.call(label)
    lanes.until_waiting(0, 5)
    passes = lanes.release()  # each caller still gets its own vector (checked there)
    # 5 images run as a batch of 8 (3 rows of padding, label 0): few shapes for cuDNN to plan.
    assert passes == [[0], [1, 2, 3, 4, 5, 0, 0, 0]]


@pytest.mark.parametrize(
    ("count", "max_batch", "size"), [(1, 16, 1), (5, 16, 8), (16, 16, 16), (70, 100, 100)]
)
def test_gpu_batch_size_is_the_next_power_of_two_up_to_the_limit(
    count: int, max_batch: int, size: int
) -> None:
    assert local_vectorizer.gpu_batch_size(count, max_batch) == size


def test_local_bulk_batches_are_full_without_recent_interactive_work(gated: GatedModel) -> None:
    now = [50.0]
    share = CpuShare(interactive_recent_s=1.0, clock=lambda: now[0])
    vectorizer = LocalVectorizer(max_batch=16, max_wait_s=0.0, share=share, workers=1)
    lanes = Lanes(vectorizer, gated)
    lanes.hold_worker()
    lanes.call(100, interactive=True)
    lanes.until_waiting(1, 0)
    now[0] += 1.0  # the query is no longer recent when the bulk batch is formed
    for label in range(1, 21):
        lanes.call(label)
    lanes.until_waiting(1, 20)
    passes = lanes.release()
    assert passes[:2] == [[0], [100]]
    assert [len(p) for p in passes[2:]] == [16, 4]


def test_local_bulk_work_is_not_starved_by_interactive_work(gated: GatedModel) -> None:
    vectorizer = LocalVectorizer(max_batch=1, max_wait_s=0.0, interactive_streak=3, workers=1)
    lanes = Lanes(vectorizer, gated)
    lanes.hold_worker()
    for label in (1, 2):
        lanes.call(label)
    lanes.until_waiting(0, 2)
    for label in range(101, 108):
        lanes.call(label, interactive=True)
    lanes.until_waiting(7, 2)
    passes = lanes.release()
    lane = "".join("I" if p[0] >= 100 else "B" for p in passes[1:])
    assert lane == "IIIBIIIBI"  # one bulk pass after every 3 interactive passes in a row


def test_local_bulk_work_yields_the_cpu_while_queries_are_recent(gated: GatedModel) -> None:
    now = [50.0]
    share = CpuShare(interactive_recent_s=5.0, clock=lambda: now[0])
    vectorizer = LocalVectorizer(max_batch=16, max_wait_s=0.0, share=share, workers=1)
    lanes = Lanes(vectorizer, gated)
    lanes.call(100, interactive=True)  # a chat query: ingestion should now leave the CPU
    assert gated.entered.wait(30)
    for label in range(1, 6):
        lanes.call(label)
    # One bulk image is decoded and queued; the others wait before decoding.
    lanes.until_waiting(0, 1)
    threading.Event().wait(0.05)
    assert vectorizer.waiting == (0, 1)
    now[0] += 5.0  # the query is no longer recent: the others start
    lanes.until_waiting(0, 5)
    passes = lanes.release()
    assert passes[0] == [100]
    assert sorted(sum(passes[1:], [])) == [1, 2, 3, 4, 5]


# --------------------------------------------------------------------------- preprocessing


def _saved(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def scaled(data: bytes) -> np.ndarray:
    """The model's input as its first step scales it: (pixel - 127) / 128."""
    return (preprocess(data).astype(np.float32) - 127.0) / 128.0


def test_preprocess_gives_the_8_bit_centre_crop() -> None:
    pixels = preprocess(picture_bytes(6, size=(640, 360)))
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.uint8
    white = preprocess(_saved(Image.new("RGB", (50, 40), (255, 255, 255)), "PNG"))
    assert (white == 255).all()


@pytest.mark.parametrize("mode", ["L", "1", "P", "RGBA", "LA", "CMYK", "I;16", "I"])
def test_preprocess_converts_modes_to_rgb(mode: str) -> None:
    rgb = picture(7)
    if mode == "I;16":
        image = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
        assert image.mode == "I;16"
    elif mode == "I":
        image = rgb.convert("L").convert("I").point(lambda v: v * 257)
    else:
        image = rgb.convert(mode)
    fmt = "TIFF" if mode in ("CMYK", "I") else "PNG"
    pixels = scaled(_saved(image, fmt))
    assert pixels.shape == (224, 224, 3)
    if mode in ("L", "I;16", "I"):
        # 16-bit data is rescaled, not clipped: it matches the 8-bit greyscale picture.
        expected = scaled(_saved(rgb.convert("L"), "PNG"))
        assert np.abs(pixels - expected).mean() < 0.02, mode


def test_preprocess_flattens_transparency_onto_white() -> None:
    clear = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    assert np.allclose(scaled(_saved(clear, "PNG")), 1.0)


def test_preprocess_applies_exif_orientation() -> None:
    upright = picture(8, size=(320, 240))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what the camera wrote
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display": undoes the stored rotation
    tagged = _saved(stored, "JPEG", quality=95, exif=exif)
    expected = scaled(encode(upright, "JPEG", quality=95))
    assert np.abs(scaled(tagged) - expected).mean() < 0.05
    assert np.abs(scaled(_saved(stored, "JPEG", quality=95)) - expected).mean() > 0.1


def test_preprocess_uses_the_first_frame_of_an_animation() -> None:
    first, second = picture(9).convert("P"), picture(10).convert("P")
    animated = _saved(first, "GIF", save_all=True, append_images=[second], duration=100)
    assert np.allclose(scaled(animated), scaled(_saved(first, "GIF")))


def test_preprocess_jpeg_draft_keeps_the_geometry() -> None:
    large = picture(11, size=(1600, 1200))
    drafted = scaled(encode(large, "JPEG", quality=95))
    exact = scaled(_saved(large, "PNG"))
    assert np.abs(drafted - exact).mean() < 0.05


# =========================================================================== Azure AI Vision


class Sleeps:
    """A fake clock and sleep: waits are recorded and advance the clock instead of blocking."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []
        self._lock = threading.Lock()

    def clock(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.waits.append(seconds)
            self.now += seconds


@pytest.fixture
def service() -> Iterator[FakeVisionService]:
    with FakeVisionService(key=KEY, tokens=(TOKEN,)) as fake:
        yield fake
    assert fake.violations == []


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def azure(service: FakeVisionService, sleeps: Sleeps, **options: object) -> AzureVisionVectorizer:
    settings: dict[str, object] = {"key": KEY, "token_provider": None, **options}
    return AzureVisionVectorizer(
        endpoint=service.endpoint,
        sleep=sleeps.sleep,
        clock=sleeps.clock,
        **settings,  # type: ignore[arg-type]
    )


def test_azure_image_request_contract_with_key(service: FakeVisionService, sleeps: Sleeps) -> None:
    data = picture_bytes(20)
    vector = azure(service, sleeps).vectorize_image(data)
    assert len(vector) == 1024
    assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-9)
    assert np.allclose(vector, unit(image_vector(data)))
    [request] = service.requests
    assert (request.method, request.path) == ("POST", "/computervision/retrieval:vectorizeImage")
    assert request.query == {"api-version": ["2024-02-01"], "model-version": ["2023-04-15"]}
    assert request.headers["Content-Type"] == "application/octet-stream"
    assert request.auth == "key" and request.size == len(data) and request.status == 200


def test_azure_text_with_bearer_token(service: FakeVisionService, sleeps: Sleeps) -> None:
    calls: list[int] = []

    def token_provider() -> str:
        calls.append(1)
        return TOKEN

    vectorizer = azure(service, sleeps, key=None, token_provider=token_provider)
    vector = vectorizer.vectorize_text("a red bicycle leaning on a wall")
    assert np.allclose(vector, unit(text_vector("a red bicycle leaning on a wall")))
    [request] = service.requests
    assert request.path == "/computervision/retrieval:vectorizeText"
    assert request.auth == "bearer" and calls == [1]
    assert request.headers["Content-Type"] == "application/json"
    assert vectorizer.model.supports_text and vectorizer.model.dimensions == 1024
    assert vectorizer.model.version == "2023-04-15"


@pytest.mark.parametrize("text", ["", "   ", " ".join(["word"] * 71)])
def test_azure_text_length_is_checked_locally(
    service: FakeVisionService, sleeps: Sleeps, text: str
) -> None:
    with pytest.raises(VectorizerInputError, match="1 to 70 words"):
        azure(service, sleeps).vectorize_text(text)
    assert service.requests == []


def test_azure_needs_exactly_one_credential() -> None:
    for key, provider in ((None, None), ("k", lambda: "t")):
        with pytest.raises(ValueError, match="exactly one"):
            AzureVisionVectorizer(endpoint="https://x", key=key, token_provider=provider)


def test_azure_honours_retry_after_on_429(service: FakeVisionService, sleeps: Sleeps) -> None:
    service.fail_next(429, 2, retry_after="3")
    vector = azure(service, sleeps).vectorize_image(picture_bytes(21))
    assert len(vector) == 1024
    assert [r.status for r in service.requests] == [429, 429, 200]
    assert sleeps.waits[:2] == [pytest.approx(3.0), pytest.approx(3.0)]


def test_azure_honours_retry_after_ms(service: FakeVisionService, sleeps: Sleeps) -> None:
    service.fail_next(429, 1, retry_after="1", retry_after_ms="250")
    azure(service, sleeps).vectorize_image(picture_bytes(22))
    assert sleeps.waits[0] == pytest.approx(0.25)


def test_a_429_holds_back_the_other_threads_too(sleeps: Sleeps) -> None:
    pacer = RatePacer(clock=sleeps.clock, sleep=sleeps.sleep)
    for _ in range(5):
        assert pacer.acquire() == 0  # unpaced until the first 429
        pacer.succeeded(sleeps.now)
    pacer.throttled(2.0, fallback_s=0.5)
    waits: list[float] = []
    other = threading.Thread(target=lambda: waits.append(pacer.acquire()))
    other.start()
    other.join()
    assert waits == [pytest.approx(2.0)]
    assert pacer.rate == pytest.approx(4.5)  # paced from now on: 90 % of 5 accepted


def test_pacer_samples_the_accepted_rate_by_start_time(sleeps: Sleeps) -> None:
    pacer = RatePacer(clock=sleeps.clock, sleep=sleeps.sleep)
    starts = []
    for _ in range(20):  # 20 requests start within 0.1 s ...
        pacer.acquire()
        starts.append(sleeps.now)
        sleeps.now += 0.005
    pacer.succeeded(starts[0])  # ... only one reply is in when the 21st gets a 429
    pacer.throttled(1.0, fallback_s=1.0)
    for started in starts[1:]:
        pacer.succeeded(started)
    assert pacer.rate is None  # decided when the gate opens
    assert pacer.acquire() == pytest.approx(1.0)
    assert pacer.rate == pytest.approx(18.0)
    opened = sleeps.now
    for _ in range(3):
        pacer.acquire()
    assert sleeps.now - opened == pytest.approx(3 / 18.0)
    pacer.throttled(1.0, fallback_s=1.0)
    pacer.throttled(1.0, fallback_s=1.0)  # the same episode: one cut only
    assert pacer.rate == pytest.approx(0.9 * 18.0)


def test_pacer_starts_interactive_calls_ahead_of_paced_bulk_slots(sleeps: Sleeps) -> None:
    pacer = RatePacer(clock=sleeps.clock, sleep=sleeps.sleep)
    for _ in range(5):
        pacer.acquire()
        pacer.succeeded(sleeps.now)
    pacer.throttled(2.0, fallback_s=0.5)
    assert pacer.acquire() == pytest.approx(2.0)  # through the gate; paced at 4.5/s from now
    interval = 1 / 4.5
    assert pacer.acquire(interactive=True) == 0  # no wait for the next bulk slot ...
    assert pacer.acquire() == pytest.approx(2 * interval)  # ... which moved back by one
    pacer.throttled(3.0, fallback_s=0.5)
    assert pacer.acquire(interactive=True) == pytest.approx(3.0)  # the 429 gate holds it too


def test_azure_retries_5xx_then_succeeds(service: FakeVisionService, sleeps: Sleeps) -> None:
    service.fail_next(503, 2)
    vector = azure(service, sleeps).vectorize_image(picture_bytes(23))
    assert len(vector) == 1024
    assert [r.status for r in service.requests] == [503, 503, 200]
    assert len(sleeps.waits) == 2 and sleeps.waits[1] > sleeps.waits[0] * 0.9


def test_azure_exhausted_retries_are_unavailable(
    service: FakeVisionService, sleeps: Sleeps
) -> None:
    service.fail_next(429, 5, retry_after="2")
    with pytest.raises(VectorizerUnavailableError) as caught:
        azure(service, sleeps, max_attempts=3).vectorize_image(picture_bytes(24))
    assert caught.value.status == 429 and caught.value.retry_after_s == pytest.approx(2.0)
    assert len(service.requests) == 3


def test_azure_long_retry_after_gives_up_at_once(
    service: FakeVisionService, sleeps: Sleeps
) -> None:
    service.fail_next(429, 1, retry_after="300")
    vectorizer = azure(service, sleeps, max_retry_after_s=60)
    with pytest.raises(VectorizerUnavailableError) as caught:
        vectorizer.vectorize_image(picture_bytes(25))
    assert caught.value.retry_after_s == pytest.approx(300)
    with pytest.raises(VectorizerUnavailableError):  # the gate stays closed for everyone
        vectorizer.vectorize_image(picture_bytes(25))
    assert len(service.requests) == 1 and sleeps.waits == []


def test_azure_connection_errors_are_retried(sleeps: Sleeps) -> None:
    with FakeVisionService(key=KEY) as gone:
        endpoint = gone.endpoint  # the port is closed once the service stops
    vectorizer = AzureVisionVectorizer(
        endpoint=endpoint,
        key=KEY,
        token_provider=None,
        max_attempts=3,
        sleep=sleeps.sleep,
        clock=sleeps.clock,
    )
    with pytest.raises(VectorizerUnavailableError) as caught:
        vectorizer.vectorize_image(picture_bytes(26))
    assert caught.value.status is None and len(sleeps.waits) == 2


def test_azure_refused_image_is_an_input_error(service: FakeVisionService, sleeps: Sleeps) -> None:
    with pytest.raises(VectorizerInputError, match="InvalidImageFormat") as caught:
        azure(service, sleeps).vectorize_image(b"GIF89a but not really")
    assert "not a valid image" in str(caught.value)
    tiny = encode(Image.new("RGB", (5, 5)), "PNG")
    with pytest.raises(VectorizerInputError, match="InvalidImageDimension"):
        azure(service, sleeps).vectorize_image(tiny)
    assert len(service.requests) == 2 and len(service.refusals) == 2


def test_azure_unauthorised_is_a_configuration_error(sleeps: Sleeps) -> None:
    with FakeVisionService(key=KEY) as service:
        vectorizer = azure(service, sleeps, key="wrong-key-zzz")
        with pytest.raises(VectorizerError) as caught:
            vectorizer.vectorize_image(picture_bytes(27))
    assert not isinstance(caught.value, VectorizerInputError)
    message = str(caught.value)
    assert "401" in message and "127.0.0.1" in message and "key" in message
    assert "wrong-key-zzz" not in message and len(service.requests) == 1


def test_azure_model_version_mismatch_is_detected(sleeps: Sleeps) -> None:
    with FakeVisionService(key=KEY, answer_model_version="2022-04-11") as service:
        with pytest.raises(VectorizerError, match="2022-04-11"):
            azure(service, sleeps).vectorize_image(picture_bytes(28))


def test_azure_never_logs_secrets(
    service: FakeVisionService, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    service.fail_next(503, 1)
    service.fail_next(429, 1, retry_after="1")
    azure(service, sleeps).vectorize_image(picture_bytes(29))
    azure(service, sleeps, key=None, token_provider=lambda: TOKEN).vectorize_text("two words")
    with pytest.raises(VectorizerError) as caught:
        azure(service, sleeps, key=None, token_provider=lambda: "not-accepted").vectorize_text("x")
    service.violations.clear()  # the refused token was the point of this call
    assert "retrying" in caplog.text  # the retries were logged ...
    for secret in (KEY, TOKEN, "not-accepted"):  # ... without any credential
        assert secret not in caplog.text
        assert secret not in str(caught.value)
    assert KEY not in repr(azure(service, sleeps))


def test_parse_retry_after_forms() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    date = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert parse_retry_after({"Retry-After": "2"}) == 2.0
    assert parse_retry_after({"Retry-After": date}, now=now) == pytest.approx(7.0)
    assert parse_retry_after({"Retry-After": "5", "retry-after-ms": "120"}) == pytest.approx(0.12)
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None


# --------------------------------------------------------------------------- the fake itself


def test_fake_service_records_contract_violations() -> None:
    with FakeVisionService(key=KEY) as fake:
        url = f"{fake.endpoint}/computervision/retrieval:vectorizeImage"
        wrong_version = requests.post(
            url,
            params={"api-version": "2023-02-01-preview", "model-version": "2023-04-15"},
            data=picture_bytes(30),
            headers={"Ocp-Apim-Subscription-Key": KEY, "Content-Type": "application/octet-stream"},
            timeout=10,
        )
        wrong_type = requests.post(
            url,
            params={"api-version": "2024-02-01", "model-version": "2023-04-15"},
            data=picture_bytes(30),
            headers={"Ocp-Apim-Subscription-Key": KEY, "Content-Type": "image/jpeg"},
            timeout=10,
        )
    assert (wrong_version.status_code, wrong_type.status_code) == (404, 415)
    assert len(fake.violations) == 2
    assert all(r.headers["Ocp-Apim-Subscription-Key"] == "<redacted>" for r in fake.requests)
