"""A local stand-in for Azure AI Vision multimodal embeddings (``retrieval:vectorize*``).

A real HTTP server on 127.0.0.1 that checks every request against the documented contract
(path, api-version, model-version, auth header, Content-Type, body) and answers as the
service does. Protocol violations answer 4xx and are recorded in ``violations``; images the
service would refuse (not decodable, outside 10..16000 px, >= 20 MB) answer 400 with the
service's error shape and are recorded in ``refusals``.

``model-version`` may be a version the service offers (2022-04-11, 2023-04-15) or
``latest``, which the service answers with the concrete version it used (2023-04-15), as
``modelVersion`` in the response: a client that compares the two refuses every vector.

Vectors are derived from the content, so similar inputs get similar vectors: an image is
its 32x32 greyscale thumbnail (1024 values, mean-centred); a text is a hashed bag of words in
1024 dimensions. Both are returned scaled (not unit length), like the service's raw vectors.

    with FakeVisionService(key="k", rate_limit_tps=20, latency_s=0.1) as service:
        AzureVisionVectorizer(endpoint=service.endpoint, key="k", token_provider=None)
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import threading
import time
import warnings
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from PIL import Image

API_VERSION = "2024-02-01"
MODEL_VERSION = "2023-04-15"
# What the service accepts as model-version, and the version each is answered with.
MODEL_VERSIONS = {"2022-04-11": "2022-04-11", "2023-04-15": "2023-04-15", "latest": MODEL_VERSION}
IMAGE_PATH = "/computervision/retrieval:vectorizeImage"
TEXT_PATH = "/computervision/retrieval:vectorizeText"
DIMENSIONS = 1024
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MIN_SIDE, MAX_SIDE = 10, 16000
MAX_TEXT_WORDS = 70
# The service's vectors are not unit length; the scale makes clients normalise.
RAW_SCALE = 3.7
SECRET_HEADERS = frozenset({"ocp-apim-subscription-key", "authorization"})


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # secrets replaced by "<redacted>"
    auth: str | None  # "key", "bearer" or None (missing or wrong)
    size: int
    status: int
    at: float  # time.monotonic() when it arrived


@dataclass
class _Failure:
    status: int
    remaining: int
    retry_after: str | None
    retry_after_ms: str | None


@dataclass
class _Bucket:
    rate: float
    capacity: float
    tokens: float
    updated: float = field(default_factory=time.monotonic)

    def take(self) -> float:
        """0 if a token was taken, else the seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class _Refused(Exception):
    def __init__(self, status: int, body: dict[str, Any], *, violation: bool) -> None:
        super().__init__(body["error"]["message"])
        self.status = status
        self.body = body
        self.violation = violation


def image_vector(data: bytes) -> list[float]:
    """The fake's raw vector for these image bytes (what it answers, before normalising)."""
    with Image.open(io.BytesIO(data)) as image:
        grey = image.convert("L").resize((32, 32), Image.Resampling.BILINEAR)
        values = [float(v) for v in grey.tobytes()]
    mean = sum(values) / len(values)
    centred = [v - mean for v in values]
    return _scaled(centred)


def text_vector(text: str) -> list[float]:
    """The fake's raw vector for a text: a signed hashed bag of lowercase words."""
    vector = [0.0] * DIMENSIONS
    for word in re.findall(r"\w+", text.lower()):
        digest = hashlib.sha256(word.encode()).digest()
        index = int.from_bytes(digest[:4], "big") % DIMENSIONS
        vector[index] += 1.0 if digest[4] & 1 else -1.0
    return _scaled(vector)


def _scaled(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0:
        vector = [1.0] + [0.0] * (DIMENSIONS - 1)  # a flat image: any fixed direction
        norm = 1.0
    return [RAW_SCALE * v / norm for v in vector]


def _error(code: str, message: str, inner_code: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if inner_code is not None:
        body["error"]["innererror"] = {"code": inner_code, "message": message}
    return body


class FakeVisionService:
    """Azure AI Vision embeddings on a free local port; see the module docstring."""

    def __init__(
        self,
        *,
        key: str | None = None,
        tokens: tuple[str, ...] = (),
        rate_limit_tps: float | None = None,
        burst: float | None = None,
        latency_s: float = 0.0,
        answer_model_version: str | None = None,
        retry_after_ms_header: bool = False,
    ) -> None:
        self.key = key
        self.tokens = set(tokens)
        self.latency_s = latency_s
        self.answer_model_version = answer_model_version
        self.retry_after_ms_header = retry_after_ms_header
        self._bucket = (
            _Bucket(rate_limit_tps, burst or rate_limit_tps, burst or rate_limit_tps)
            if rate_limit_tps
            else None
        )
        self._lock = threading.Lock()
        self._failures: list[_Failure] = []
        self.requests: list[RecordedRequest] = []
        self.violations: list[str] = []
        self.refusals: list[str] = []
        self.throttled = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------------- lifecycle

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "start the service first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeVisionService:
        service = self

        class Handler(_Handler):
            fake = service

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-vision", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeVisionService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------------- test controls

    def fail_next(
        self,
        status: int,
        count: int = 1,
        *,
        retry_after: str | None = None,
        retry_after_ms: str | None = None,
    ) -> None:
        """Answer the next ``count`` authorised requests with ``status`` (e.g. 429, 503)."""
        with self._lock:
            self._failures.append(_Failure(status, count, retry_after, retry_after_ms))

    def count(self, status: int) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.status == status)

    # ----------------------------------------------------------------------- request logic

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        arrived = time.monotonic()
        parts = urlsplit(raw_path)
        query = parse_qs(parts.query, keep_blank_values=True)
        auth = self._auth(headers)
        extra: dict[str, str] = {}
        try:
            self._check_protocol(method, parts.path, query, headers, auth)
            injected = self._injected_failure()
            if injected is not None:
                status, extra, payload = injected
            elif (wait := self._take_token()) > 0:
                status, extra, payload = self._throttle(wait)
            else:
                payload = self._answer(parts.path, query["model-version"][0], body)
                status = 200
        except _Refused as refused:
            status, payload = refused.status, refused.body
            with self._lock:
                (self.violations if refused.violation else self.refusals).append(
                    f"{method} {parts.path}: {refused}"
                )
        if status != 429 and self.latency_s:
            time.sleep(self.latency_s)
        recorded = RecordedRequest(
            method=method,
            path=parts.path,
            query=query,
            headers={
                k: ("<redacted>" if k.lower() in SECRET_HEADERS else v) for k, v in headers.items()
            },
            auth=auth,
            size=len(body),
            status=status,
            at=arrived,
        )
        with self._lock:
            self.requests.append(recorded)
        return status, extra, payload

    def _auth(self, headers: dict[str, str]) -> str | None:
        lowered = {k.lower(): v for k, v in headers.items()}
        key = lowered.get("ocp-apim-subscription-key")
        if key is not None and self.key is not None and key == self.key:
            return "key"
        bearer = lowered.get("authorization", "")
        if bearer.startswith("Bearer ") and bearer[len("Bearer ") :] in self.tokens:
            return "bearer"
        return None

    def _check_protocol(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        auth: str | None,
    ) -> None:
        if auth is None:
            raise _Refused(
                401,
                _error(
                    "401",
                    "Access denied due to invalid subscription key or wrong API endpoint. Make "
                    "sure to provide a valid key for an active subscription and use a correct "
                    "regional API endpoint for your resource.",
                ),
                violation=True,
            )
        if path not in (IMAGE_PATH, TEXT_PATH):
            raise _Refused(404, _error("404", "Resource not found"), violation=True)
        if method != "POST":
            raise _Refused(405, _error("405", f"{method} is not allowed"), violation=True)
        if query.get("api-version") != [API_VERSION]:
            raise _Refused(
                404,
                _error("404", f"Resource not found (api-version {query.get('api-version')})"),
                violation=True,
            )
        versions = query.get("model-version") or []
        if len(versions) != 1 or versions[0] not in MODEL_VERSIONS:
            raise _Refused(
                400,
                _error(
                    "InvalidRequest",
                    f"model-version {query.get('model-version')} is not supported",
                    "InvalidModelVersion",
                ),
                violation=True,
            )
        content_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
        expected = "application/octet-stream" if path == IMAGE_PATH else "application/json"
        if content_type != expected:
            raise _Refused(
                415,
                _error(
                    "InvalidRequest",
                    f"Content-Type {content_type!r} is not supported here",
                    "UnsupportedMediaType",
                ),
                violation=True,
            )

    def _injected_failure(self) -> tuple[int, dict[str, str], dict[str, Any]] | None:
        with self._lock:
            if not self._failures:
                return None
            failure = self._failures[0]
            failure.remaining -= 1
            if failure.remaining <= 0:
                self._failures.pop(0)
            if failure.status == 429:
                self.throttled += 1
        headers: dict[str, str] = {}
        if failure.retry_after is not None:
            headers["Retry-After"] = failure.retry_after
        if failure.retry_after_ms is not None:
            headers["retry-after-ms"] = failure.retry_after_ms
        code = "429" if failure.status == 429 else "InternalServerError"
        return failure.status, headers, _error(code, f"injected HTTP {failure.status}")

    def _take_token(self) -> float:
        if self._bucket is None:
            return 0.0
        with self._lock:
            return self._bucket.take()

    def _throttle(self, wait: float) -> tuple[int, dict[str, str], dict[str, Any]]:
        with self._lock:
            self.throttled += 1
        headers = {"Retry-After": str(max(1, math.ceil(wait)))}
        if self.retry_after_ms_header:
            headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
        return (
            429,
            headers,
            _error(
                "429",
                "Requests to the Vectorize Operation have exceeded rate limit of your current "
                "tier. Please retry after the time given in Retry-After.",
            ),
        )

    def _answer(self, path: str, model_version: str, body: bytes) -> dict[str, Any]:
        """``answer_model_version``, when set, replaces the version the service would say."""
        if path == IMAGE_PATH:
            vector = self._image_vector(body)
        else:
            vector = self._text_vector(body)
        used = self.answer_model_version or MODEL_VERSIONS[model_version]
        return {"modelVersion": used, "vector": vector}

    def _image_vector(self, body: bytes) -> list[float]:
        if not body:
            raise _Refused(
                400,
                _error("InvalidRequest", "Image is empty.", "InvalidImageSize"),
                violation=False,
            )
        if len(body) >= MAX_IMAGE_BYTES:
            raise _Refused(
                400,
                _error("InvalidRequest", "Image size is too big.", "InvalidImageSize"),
                violation=False,
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(body)) as image:
                    width, height = image.size
                    image.load()
        except Exception:  # anything PIL cannot decode
            raise _Refused(
                400,
                _error(
                    "InvalidRequest",
                    "Input data is not a valid image.",
                    "InvalidImageFormat",
                ),
                violation=False,
            ) from None
        if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
            raise _Refused(
                400,
                _error(
                    "InvalidRequest",
                    f"Image dimension {width}x{height} is out of range: each side must be "
                    f"between {MIN_SIDE} and {MAX_SIDE} pixels.",
                    "InvalidImageDimension",
                ),
                violation=False,
            )
        return image_vector(body)

    def _text_vector(self, body: bytes) -> list[float]:
        try:
            text = json.loads(body)["text"]
            if not isinstance(text, str):
                raise TypeError("text must be a string")
        except (ValueError, KeyError, TypeError) as exc:
            raise _Refused(
                400,
                _error(
                    "InvalidRequest", f"Body must be JSON {{'text': ...}}: {exc}", "InvalidBody"
                ),
                violation=True,
            ) from None
        words = len(text.split())
        if not 1 <= words <= MAX_TEXT_WORDS:
            raise _Refused(
                400,
                _error(
                    "InvalidRequest",
                    f"Text must have 1 to {MAX_TEXT_WORDS} words, got {words}.",
                    "InvalidTextLength",
                ),
                violation=False,
            )
        return text_vector(text)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeVisionService
    protocol_version = "HTTP/1.1"  # keep-alive, like the service

    def do_POST(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        length = self.headers.get("Content-Length")
        if length is None and self.command == "POST":
            with self.fake._lock:
                self.fake.violations.append(f"{self.command} {self.path}: no Content-Length")
            self._send(411, {}, _error("411", "Content-Length required"))
            return
        body = self.rfile.read(int(length or 0))
        status, headers, payload = self.fake.handle(
            self.command, self.path, dict(self.headers.items()), body
        )
        self._send(status, headers, payload)

    def _send(self, status: int, headers: dict[str, str], payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass
