"""A local Azure OpenAI chat-completions service that checks the contract it is spoken to with.

Checks: path ``/openai/deployments/{deployment}/chat/completions`` (or ``/v1/chat/completions``
for the OpenAI-compatible flavour, model in the body), the ``api-version`` query, the
``api-key`` or ``Authorization: Bearer`` header, message shapes (roles; parts of type text or
image_url; image URLs base64 data URLs of decodable images or https), at most 10 images per
request, and the ``stream`` flag. Answers as the service does, streamed as SSE when asked
(a first chunk without choices carrying prompt_filter_results, as Azure sends), with errors in
the service's shape: 401, 404 DeploymentNotFound, 400, 429 with Retry-After, 500.

The answer is derived from the request: it names the docN labels and counts the images it was
given, so a test sees what reached the model.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from openapi_contract import errors_of, request_fields
from PIL import Image

MAX_IMAGES = 10
API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
AZURE_PATH = re.compile(r"^/openai/deployments/(?P<deployment>[^/]+)/chat/completions$")
COMPATIBLE_PATH = "/v1/chat/completions"
LABEL = re.compile(r"\b(doc\d+)\b")
# Deployments that fail the way the service does.
THROTTLED = "throttled"
BROKEN = "broken"


class ContractError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class SeenRequest:
    deployment: str
    api_version: str | None
    auth: str  # "api-key" or "bearer"
    body: dict[str, Any]
    image_count: int


@dataclass
class FakeOpenAIService:
    deployments: tuple[str, ...] = ("gpt-4o",)
    api_key: str | None = "test-key"
    bearer_token: str | None = "test-token"
    retry_after_s: int = 2
    requests: list[SeenRequest] = field(default_factory=list)
    # A slow model: the streamed answer in `stream_deltas` pieces, `delta_interval_s` apart.
    stream_deltas: int | None = None
    delta_interval_s: float = 0.0
    # When set, the last piece waits for it (at most 30 s): a test decides when the stream ends.
    release: threading.Event | None = None
    # When each stream was received and when its last byte was written (time.monotonic()).
    stream_times: list[tuple[float, float]] = field(default_factory=list)
    stream_finished: threading.Event = field(default_factory=threading.Event)
    # Throttled once streaming: after this many pieces an error event ends the stream.
    throttle_after: int | None = None
    _server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeOpenAIService:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                service._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # ----------------------------------------------------------------- contract

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        try:
            seen = self._check(handler)
        except ContractError as exc:
            headers = {"Retry-After": str(self.retry_after_s)} if exc.status == 429 else {}
            _send_json(
                handler,
                exc.status,
                {"error": {"code": exc.code, "message": exc.message}},
                headers,
            )
            return
        self.requests.append(seen)
        answer = _answer(seen)
        model = seen.body.get("model") or seen.deployment
        if seen.body.get("stream"):
            received = time.monotonic()
            pieces = self._pieces(answer)
            error = None
            if self.throttle_after is not None:
                pieces = pieces[: self.throttle_after]
                error = {"code": "429", "message": _throttled_message(self.retry_after_s)}
            _send_stream(handler, model, pieces, self._pace, error)
            self.stream_times.append((received, time.monotonic()))
            self.stream_finished.set()
        else:
            _send_json(handler, 200, _completion(model, answer))

    def _pieces(self, answer: str) -> list[str]:
        if not self.stream_deltas:
            return re.findall(r"\S+\s*", answer)
        n = self.stream_deltas
        return [answer[i * len(answer) // n : (i + 1) * len(answer) // n] for i in range(n)]

    def _pace(self, index: int, count: int) -> None:
        """Before piece ``index`` of ``count``: the model's pace, and the test's gate."""
        if index > 0:
            time.sleep(self.delta_interval_s)
        if index == count - 1 and self.release is not None:
            self.release.wait(timeout=30)

    def _check(self, handler: BaseHTTPRequestHandler) -> SeenRequest:
        url = urlsplit(handler.path)
        query = parse_qs(url.query)
        azure = AZURE_PATH.match(url.path)
        if azure is None and url.path != COMPATIBLE_PATH:
            raise ContractError(404, "404", "Resource not found")
        api_version = (query.get("api-version") or [None])[0]
        if azure is not None and (api_version is None or not API_VERSION.match(api_version)):
            raise ContractError(404, "404", "Resource not found")  # what the service answers
        auth = self._check_auth(handler, azure is not None)
        length = int(handler.headers.get("Content-Length") or 0)
        try:
            body = json.loads(handler.rfile.read(length))
        except ValueError:
            raise ContractError(400, "BadRequest", "the body is not JSON") from None
        if handler.headers.get_content_type() != "application/json":
            raise ContractError(400, "BadRequest", "Content-Type must be application/json")
        deployment = azure.group("deployment") if azure else str(body.get("model") or "")
        if deployment == THROTTLED:
            raise ContractError(429, "429", _throttled_message(self.retry_after_s))
        if deployment == BROKEN:
            raise ContractError(500, "InternalServerError", "The server had an error.")
        if deployment not in self.deployments:
            raise ContractError(
                404, "DeploymentNotFound", "The API deployment for this resource does not exist."
            )
        if "stream" in body and not isinstance(body["stream"], bool):
            raise ContractError(400, "BadRequest", "'stream' must be a boolean")
        _check_parameters(body)
        images = _check_messages(body.get("messages"))
        if images > MAX_IMAGES:
            raise ContractError(
                400, "BadRequest", f"Too many images in request. Max is {MAX_IMAGES}."
            )
        return SeenRequest(deployment, api_version, auth, body, images)

    def _check_auth(self, handler: BaseHTTPRequestHandler, azure: bool) -> str:
        key = handler.headers.get("api-key")
        bearer = handler.headers.get("Authorization", "")
        if azure and key is not None:
            if key != self.api_key:
                raise ContractError(401, "401", "Access denied due to invalid subscription key.")
            return "api-key"
        expected = self.bearer_token if azure else self.api_key
        if bearer != f"Bearer {expected}":
            raise ContractError(401, "401", "Unauthorized. Access token is missing or invalid.")
        return "bearer"


def _check_parameters(body: dict[str, Any]) -> None:
    """Every argument is one the inference document (2024-10-21) defines, of its type and
    range: the service refuses the rest ("Unrecognized request argument supplied")."""
    # The SDKs send the model (the deployment, for Azure) in the body too.
    known = set(request_fields()) | {"model"}
    for name in body:
        if name not in known:
            raise ContractError(
                400, "BadRequest", f"Unrecognized request argument supplied: {name}"
            )
    problems = errors_of("createChatCompletionRequest", {**body, "messages": [{}]})
    problems = [p for p in problems if not p.startswith("messages")]
    if problems:
        raise ContractError(400, "BadRequest", f"Invalid request: {problems[0]}")


def _check_messages(messages: Any) -> int:
    if not isinstance(messages, list) or not messages:
        raise ContractError(400, "BadRequest", "'messages' must be a non-empty array")
    images = 0
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise ContractError(400, "BadRequest", f"messages[{i}].role is invalid")
        content = message.get("content")
        if isinstance(content, str) or (content is None and role == "assistant"):
            continue
        if not isinstance(content, list) or role not in ("user", "system", "developer"):
            raise ContractError(400, "BadRequest", f"messages[{i}].content is invalid")
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                continue
            if kind == "image_url" and role == "user":
                _check_image_url(part.get("image_url"), f"messages[{i}].content[{j}]")
                images += 1
                continue
            raise ContractError(400, "BadRequest", f"messages[{i}].content[{j}] is invalid")
    return images


def _check_image_url(image_url: Any, where: str) -> None:
    url = image_url.get("url") if isinstance(image_url, dict) else None
    if not isinstance(url, str):
        raise ContractError(400, "BadRequest", f"{where}.image_url.url is missing")
    if url.startswith("https://"):
        return
    match = re.match(r"^data:image/(jpeg|png|gif|webp);base64,", url)
    if match is None:
        raise ContractError(400, "BadRequest", f"{where}: invalid image URL")
    try:
        data = base64.b64decode(url[match.end() :], validate=True)
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except (binascii.Error, ValueError, OSError):
        raise ContractError(400, "BadRequest", f"{where}: invalid image data") from None


def _answer(seen: SeenRequest) -> str:
    texts = []
    for message in seen.body["messages"]:
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [p["text"] for p in content if p.get("type") == "text"]
    labels = list(dict.fromkeys(LABEL.findall(" ".join(texts))))
    cited = " ".join(f"[{label}]" for label in labels) or "(no documents)"
    return f"I was given {seen.image_count} images and documents {cited}."


def _completion(model: str, answer: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": answer},
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
    }


def _send_json(
    handler: BaseHTTPRequestHandler, status: int, body: Any, headers: dict[str, str] | None = None
) -> None:
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)


def _throttled_message(retry_after_s: int) -> str:
    return (
        "Requests to the ChatCompletions_Create Operation have exceeded call rate limit. "
        f"Please retry after {retry_after_s} seconds."
    )


def _send_stream(
    handler: BaseHTTPRequestHandler,
    model: str,
    pieces: list[str],
    pace: Callable[[int, int], None],
    error: dict[str, Any] | None = None,
) -> None:
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(body)}\n\n".encode()

    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(chunk([], prompt_filter_results=[{"prompt_index": 0}]))
    handler.wfile.write(chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}}]))
    handler.wfile.flush()
    for i, piece in enumerate(pieces):
        pace(i, len(pieces))
        handler.wfile.write(chunk([{"index": 0, "delta": {"content": piece}}]))
        handler.wfile.flush()
    if error is not None:  # the status is out: the error is an event, then the stream ends
        handler.wfile.write(f"data: {json.dumps({'error': error})}\n\n".encode())
        handler.wfile.flush()
        handler.close_connection = True
        return
    handler.wfile.write(chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    handler.wfile.write(b"data: [DONE]\n\n")
    handler.wfile.flush()
    handler.close_connection = True
