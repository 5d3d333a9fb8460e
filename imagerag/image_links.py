"""Short-lived, signed links to this app's image route, for citations when storage does not
sign URLs itself (connection strings, Azurite).

A link is ``<route>/<container>/<path>?exp=<unix seconds>&sig=<HMAC-SHA256>``: it opens one
image until it expires, with no function key in it, so links can end up in logs and chat
transcripts without handing out a credential.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from urllib.parse import quote

DEFAULT_TTL_S = 3600


class ImageLinks:
    def __init__(
        self,
        key: bytes | None = None,
        *,
        ttl_s: int = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # Without a configured key, a random one per process: links stay valid while the
        # process runs (one devhost), and never become forgeable.
        self._key = key or secrets.token_bytes(32)
        self._ttl_s = ttl_s
        self._clock = clock

    def sign(self, route: str, container: str, path: str) -> str:
        """The link to ``container/path`` under ``route`` (which ends with '/')."""
        expires = int(self._clock()) + self._ttl_s
        signature = self._signature(container, path, expires)
        return f"{route}{quote(container)}/{quote(path)}?exp={expires}&sig={signature}"

    def verify(self, container: str, path: str, expires: str, signature: str) -> bool:
        """Whether the link was signed here for this image and has not expired."""
        if not expires.isdigit() or int(expires) < self._clock():
            return False
        expected = self._signature(container, path, int(expires))
        return hmac.compare_digest(expected, signature)

    def _signature(self, container: str, path: str, expires: int) -> str:
        message = f"{container}\n{path}\n{expires}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
