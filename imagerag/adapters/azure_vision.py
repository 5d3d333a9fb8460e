"""Azure AI Vision multimodal embeddings (``retrieval:vectorizeImage`` / ``vectorizeText``).

One instance is shared by every thread of the process (config.vectorizer caches it), so
throttling is handled for all of them together:

* a shared "not before" gate: a 429's Retry-After (or, without one, the backoff) holds back
  every thread, not just the one that was throttled;
* client-side pacing that converges to the rate the resource accepts: unpaced until the
  first 429, then request starts are spaced at 90 % of the rate that was being accepted,
  climbing back quickly to just under that ceiling and then probing slowly above it;
* interactive calls (chat queries) are not queued behind the paced slots of bulk calls
  (ingestion): they start at once, within the gate, and push the bulk slots back by one;
* 5xx, 408, connection errors and timeouts are retried per call with exponential backoff
  and jitter (or the service's Retry-After), at most ``max_attempts`` attempts.

Keys, tokens and image bytes are never logged nor put in error messages.
"""

from __future__ import annotations

import collections
import datetime
import json
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from imagerag.adapters.retry_after import parse_retry_after
from imagerag.ports import (
    ImageEmbedding,
    ModelInfo,
    VectorizerError,
    VectorizerInputError,
    VectorizerUnavailableError,
)

logger = logging.getLogger(__name__)

MODEL_NAME = "azure-ai-vision"
DIMENSIONS = 1024
DEFAULT_API_VERSION = "2024-02-01"
DEFAULT_MODEL_VERSION = "2023-04-15"
MAX_TEXT_WORDS = 70
# Model versions are dates; "latest" is not accepted (see AzureVisionVectorizer).
_CONCRETE_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}")

# Statuses that describe the input itself (the image or text was refused): not retried.
_INPUT_STATUSES = frozenset({400, 413, 415, 422})
_RETRY_STATUSES = frozenset({408, 429})


class RatePacer:
    """Spaces request starts across threads and holds them all behind a throttling gate.

    ``acquire`` reserves the next start slot and sleeps until it; ``throttled`` is called on a
    429 and ``succeeded`` (with the request's start time) on a 2xx. Pure timing logic: clock
    and sleep are injectable.

    The first 429 switches pacing on at 90 % of the rate the service accepted in the second
    before it. That rate is counted by request *start* time once the gate opens, when the
    replies to requests in flight at the 429 are in: counting replies at the 429 itself would
    miss those still in flight and pace far too low.
    """

    # After a 429 the rate drops to this share of the rate that was being accepted.
    DECREASE = 0.9
    # Climb (requests/s per second of traffic) back to 95 % of the last ceiling, then probe.
    RECOVER_PER_S = 1.0
    PROBE_PER_S = 0.05
    MIN_RATE = 0.1
    # Accepted requests in the sampled second needed to switch pacing on.
    MIN_SAMPLE = 2
    _HISTORY_S = 5.0

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._rate: float | None = None  # requests/s; None = unpaced
        self._ceiling: float | None = None
        self._next_slot = 0.0
        self._not_before = 0.0
        self._last_decrease = -math.inf
        self._first_throttle: float | None = None  # when unpaced traffic first got a 429
        self._accepted_starts: collections.deque[float] = collections.deque()

    @property
    def rate(self) -> float | None:
        with self._lock:
            return self._rate

    def acquire(self, max_wait_s: float = math.inf, *, interactive: bool = False) -> float:
        """Wait for this thread's start slot and return the seconds waited; when the gate is
        further away than ``max_wait_s``, return that wait as a negative number at once.

        ``interactive``: start as soon as the gate is open, ahead of the slots already
        reserved; the next reservation moves back by one interval, so the rate holds."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                closed_for = self._not_before - now
                if closed_for > max_wait_s:
                    return -closed_for
                if closed_for <= 0:
                    if self._first_throttle is not None:
                        self._start_pacing()
                    start = now if interactive else max(now, self._next_slot)
                    if self._rate is not None:
                        self._next_slot = max(start, self._next_slot) + 1.0 / self._rate
                    break
            # Sleep to the gate, then take a slot: it may have moved, and pacing may start.
            self._sleep(closed_for)
            waited += closed_for
        wait = start - now
        if wait > 0:
            self._sleep(wait)
        return waited + max(0.0, wait)

    def throttled(self, retry_after_s: float | None, fallback_s: float) -> None:
        """A 429: gate everyone, and slow down once per throttling episode."""
        with self._lock:
            now = self._clock()
            pause = retry_after_s if retry_after_s is not None else fallback_s
            self._not_before = max(self._not_before, now + pause)
            if self._rate is None:
                if self._first_throttle is None:
                    self._first_throttle = now  # the rate is sampled when the gate opens
                return
            # Replies to requests sent before the gate closed belong to the same episode.
            if now - self._last_decrease < max(1.0, pause):
                return
            self._last_decrease = now
            self._ceiling = self._rate
            self._rate = max(self.MIN_RATE, self.DECREASE * self._rate)
            self._next_slot = max(self._next_slot, self._not_before)
            rate = self._rate
        logger.info("throttled: pacing requests at %.2f/s", rate)

    def succeeded(self, started_at: float) -> None:
        with self._lock:
            self._accepted_starts.append(started_at)
            horizon = self._clock() - self._HISTORY_S
            while self._accepted_starts and self._accepted_starts[0] < horizon:
                self._accepted_starts.popleft()
            if self._rate is None or self._ceiling is None:
                return
            per_s = self.RECOVER_PER_S if self._rate < 0.95 * self._ceiling else self.PROBE_PER_S
            # One success takes ~1/rate seconds of traffic: grow by per_s per second.
            self._rate += per_s / self._rate

    def _start_pacing(self) -> None:
        assert self._first_throttle is not None
        end = self._first_throttle
        accepted = sum(1 for t in self._accepted_starts if end - 1.0 <= t <= end)
        self._last_decrease = end
        self._first_throttle = None
        if accepted < self.MIN_SAMPLE:
            return  # too little traffic to estimate a rate from: the gate is enough
        self._ceiling = float(accepted)
        self._rate = max(self.MIN_RATE, self.DECREASE * accepted)
        logger.info("throttled: pacing requests at %.2f/s", self._rate)


class AzureVisionVectorizer:
    """Vectorizer backed by Azure AI Vision (Florence) multimodal embeddings, 1024-d."""

    def __init__(
        self,
        *,
        endpoint: str,
        key: str | None,
        token_provider: Callable[[], str] | None,
        model_version: str = DEFAULT_MODEL_VERSION,
        api_version: str = DEFAULT_API_VERSION,
        session: requests.Session | None = None,
        max_attempts: int = 6,
        timeout_s: float = 30.0,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 20.0,
        max_retry_after_s: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if (key is None) == (token_provider is None):
            raise ValueError(
                "AzureVisionVectorizer needs exactly one of key (AZURE_VISION_KEY) or "
                "token_provider (Microsoft Entra ID)"
            )
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not _is_concrete_version(model_version):
            # "latest" is answered with the concrete version used, which never equals the one
            # asked for: every vector would be refused, and the index could not record it.
            raise ValueError(
                f"AZURE_VISION_MODEL_VERSION={model_version!r} is not a concrete model version: "
                f"set AZURE_VISION_MODEL_VERSION={DEFAULT_MODEL_VERSION} (or another YYYY-MM-DD "
                "version of the multimodal embeddings model) or leave it unset. Vectors of "
                "different versions never mix, so an index records the exact version."
            )
        self._endpoint = endpoint.rstrip("/")
        self._key = key
        self._token_provider = token_provider
        self._auth_mode = "key" if key is not None else "Microsoft Entra token"
        self._model_version = model_version
        self._params = {"api-version": api_version, "model-version": model_version}
        self._session = session or _pooled_session()
        self._max_attempts = max_attempts
        self._timeout_s = timeout_s
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._max_retry_after_s = max_retry_after_s
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self.pacer = RatePacer(clock=clock, sleep=sleep)

    def __repr__(self) -> str:  # no credentials
        return f"AzureVisionVectorizer(endpoint={self._endpoint!r}, auth={self._auth_mode!r})"

    @property
    def model(self) -> ModelInfo:
        return ModelInfo(
            name=MODEL_NAME, version=self._model_version, dimensions=DIMENSIONS, supports_text=True
        )

    def vectorize_image(self, data: bytes, *, interactive: bool = False) -> list[float]:
        return self._vectorize(
            "retrieval:vectorizeImage",
            data,
            {"Content-Type": "application/octet-stream"},
            interactive=interactive,
        )

    def embed_image(self, data: bytes, *, interactive: bool = False) -> ImageEmbedding:
        # No thumbnail: Azure AI Search documents hold the service's vector alone.
        return ImageEmbedding(self.vectorize_image(data, interactive=interactive))

    def vectorize_text(self, text: str, *, interactive: bool = False) -> list[float]:
        words = len(text.split())
        if not 1 <= words <= MAX_TEXT_WORDS:
            raise VectorizerInputError(
                f"text must have 1 to {MAX_TEXT_WORDS} words for Azure AI Vision (got {words})"
            )
        body = json.dumps({"text": text}).encode("utf-8")
        return self._vectorize(
            "retrieval:vectorizeText",
            body,
            {"Content-Type": "application/json"},
            interactive=interactive,
        )

    # ----------------------------------------------------------------------- HTTP

    def _vectorize(
        self, operation: str, body: bytes, headers: dict[str, str], *, interactive: bool
    ) -> list[float]:
        url = f"{self._endpoint}/computervision/{operation}"
        status: int | None = None
        retry_after: float | None = None
        for attempt in range(1, self._max_attempts + 1):
            waited = self.pacer.acquire(self._max_retry_after_s, interactive=interactive)
            if waited < 0:
                raise VectorizerUnavailableError(
                    f"Azure AI Vision at {self._endpoint} is throttling for {-waited:.0f} s more",
                    status=429,
                    retry_after_s=-waited,
                )
            started = self._clock()
            try:
                response = self._session.post(
                    url,
                    params=self._params,
                    data=body,
                    headers={**headers, **self._auth_headers()},
                    timeout=self._timeout_s,
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                status, retry_after = None, None
                reason = type(exc).__name__
            else:
                status = response.status_code
                if status == 200:
                    self.pacer.succeeded(started)
                    return self._vector_from(response)
                retry_after = parse_retry_after(response.headers)
                if status not in _RETRY_STATUSES and status < 500:
                    raise self._refusal(response, operation)
                reason = f"HTTP {status}"
            if retry_after is not None and retry_after > self._max_retry_after_s:
                break  # e.g. a per-minute quota: let the caller's retry policy wait instead
            if attempt == self._max_attempts:
                break
            delay = self._backoff(attempt)
            logger.warning(
                "Azure AI Vision %s: %s (attempt %d of %d), retrying in %.2f s",
                operation,
                reason,
                attempt,
                self._max_attempts,
                retry_after if retry_after is not None else delay,
            )
            if status == 429:
                self.pacer.throttled(retry_after, delay)  # the next acquire waits at the gate
            elif retry_after is not None:
                self._sleep(retry_after)
            else:
                self._sleep(delay)
        if status == 429:
            self.pacer.throttled(retry_after, self._backoff(self._max_attempts))
        raise VectorizerUnavailableError(
            f"Azure AI Vision {operation} at {self._endpoint} still failing after "
            f"{attempt} attempt(s): " + (f"HTTP {status}" if status else "no response"),
            status=status,
            retry_after_s=retry_after,
        )

    def _auth_headers(self) -> dict[str, str]:
        if self._key is not None:
            return {"Ocp-Apim-Subscription-Key": self._key}
        assert self._token_provider is not None
        try:
            token = self._token_provider()
        except Exception as exc:
            raise VectorizerError(
                f"could not get a Microsoft Entra token for Azure AI Vision at {self._endpoint}: "
                f"{type(exc).__name__}"
            ) from exc
        return {"Authorization": f"Bearer {token}"}

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self._backoff_max_s, self._backoff_base_s * 2.0 ** (attempt - 1))
        return ceiling * (0.5 + 0.5 * self._rng.random())  # jitter de-synchronises threads

    def _vector_from(self, response: requests.Response) -> list[float]:
        try:
            payload: Any = response.json()
            answered = payload.get("modelVersion")
            vector = [float(x) for x in payload["vector"]]
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise VectorizerError(
                f"Azure AI Vision at {self._endpoint} answered 200 without a usable vector"
            ) from exc
        if answered != self._model_version:
            raise VectorizerError(
                f"Azure AI Vision answered model version {answered!r} but {self._model_version!r}"
                " was asked: vectors of different model versions must not be mixed"
            )
        if len(vector) != DIMENSIONS:
            raise VectorizerError(
                f"Azure AI Vision returned {len(vector)} dimensions, expected {DIMENSIONS}"
            )
        norm = math.sqrt(math.fsum(x * x for x in vector))
        if not math.isfinite(norm) or norm == 0.0:
            raise VectorizerError("Azure AI Vision returned a zero or non-finite vector")
        return [x / norm for x in vector]

    def _refusal(self, response: requests.Response, operation: str) -> VectorizerError:
        status = response.status_code
        code, message = _service_error(response)
        if status in _INPUT_STATUSES:
            return VectorizerInputError(
                f"Azure AI Vision refused the input ({operation}): HTTP {status} {code}: {message}"
            )
        return VectorizerError(
            f"Azure AI Vision at {self._endpoint} answered HTTP {status} {code}: {message} - "
            f"check AZURE_VISION_ENDPOINT and the {self._auth_mode} (the identity needs the "
            "'Cognitive Services User' role)"
        )


def _is_concrete_version(version: str) -> bool:
    if not _CONCRETE_VERSION.fullmatch(version):
        return False
    try:
        datetime.date.fromisoformat(version)
    except ValueError:
        return False
    return True


def _service_error(response: requests.Response) -> tuple[str, str]:
    """``(code, message)`` from the service's error JSON, the inner error preferred."""
    try:
        error = response.json()["error"]
        inner = error.get("innererror") or {}
        code = inner.get("code") or error.get("code") or "?"
        message = inner.get("message") or error.get("message") or ""
        return str(code), str(message)
    except (ValueError, KeyError, TypeError, AttributeError):
        return "?", response.text[:200]


def _pooled_session() -> requests.Session:
    # Up to 16 activity threads share this instance; the default pool of 10 would churn.
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
