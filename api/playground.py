"""The playground page: the static files under ``web/``, served by the app itself at
``/api/playground/`` so the page and the API share one origin (no CORS needed).

Anonymous on purpose: the files are static and public; the API calls the page makes carry the
function key (``x-functions-key``) the user types in. Only files inside ``web/`` with a known
type are served; every path is resolved (symbolic links too) and checked to stay inside.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import urlsplit

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

bp = func.Blueprint()

WEB_ROOT = Path(__file__).resolve().parent.parent / "web"
INDEX = "index.html"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}

# No build step means no content-hashed file names: browsers revalidate every time (ETag, 304).
CACHE_CONTROL = "no-cache"
# The page loads only its own script and style; citation thumbnails may be SAS URLs (https) or
# this app's signed image route; API calls go to this app or, when the user points the page at
# another Functions app, to an https one.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data: blob: https:; connect-src 'self' https:; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@bp.function_name("playground")
@bp.route(
    route="playground/{*path}",
    methods=["GET"],
    # Static files: a browser's page load cannot send a function key (the API calls do).
    auth_level=func.AuthLevel.ANONYMOUS,
)
def playground(req: Request) -> Response:
    """``GET /api/playground/`` (the page) and ``/api/playground/<file>`` (its script, style)."""
    relative = req.path_params.get("path") or ""
    if not relative:
        url = urlsplit(str(req.url))
        if not url.path.endswith("/"):
            # The page links its files relatively: it must be loaded from ".../playground/".
            location = url.path + "/" + (f"?{url.query}" if url.query else "")
            return Response(status_code=308, headers={"Location": location, **SECURITY_HEADERS})
        relative = INDEX
    file = resolve(relative)
    if file is None:
        return Response(
            "not found",
            status_code=404,
            headers={"Content-Type": "text/plain; charset=utf-8", **SECURITY_HEADERS},
        )
    data = file.read_bytes()
    etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
    headers = {"Cache-Control": CACHE_CONTROL, "ETag": etag, **SECURITY_HEADERS}
    if file.suffix == ".html":
        headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    if etag in _etags(req.headers.get("If-None-Match", "")):
        return Response(status_code=304, headers=headers)
    headers["Content-Type"] = CONTENT_TYPES[file.suffix]
    return Response(data, status_code=200, headers=headers)


def resolve(relative: str, root: Path = WEB_ROOT) -> Path | None:
    """The file under ``root`` that ``relative`` names, or None: outside ``root`` (``..``,
    absolute paths, links leading out), hidden, not a regular file, or of an unknown type."""
    if "\\" in relative or "\x00" in relative:
        return None
    parts = [p for p in relative.split("/") if p]
    if not parts or any(p.startswith(".") for p in parts):
        return None  # also refuses ".." and hidden files such as .DS_Store
    base = root.resolve()
    try:
        candidate = base.joinpath(*parts).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not candidate.is_relative_to(base) or not candidate.is_file():
        return None
    if candidate.suffix not in CONTENT_TYPES:
        return None
    return candidate


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}
