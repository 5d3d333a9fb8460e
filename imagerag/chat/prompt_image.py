"""The prompt image: a data: URL decoded, or an allow-listed http(s) URL fetched with an SSRF
guard; either way checked with the same image rules as ingestion."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from imagerag import images
from imagerag.chat.errors import ChatError, invalid

MAX_IMAGE_BYTES = images.MAX_BYTES  # 20 MB, the Vision limit, also for prompt images
MAX_REDIRECTS = 3
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^,;]*)*?);base64,", re.I)


Resolver = Callable[[str, int], list[str]]


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the host name resolves to (IPv4 and IPv6)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class ImageUrlPolicy:
    """Which http(s) image URLs may be fetched: hosts on the allow-list ("example.com", or
    "*.example.com" for its subdomains) whose every address is public."""

    allowlist: tuple[str, ...] = ()
    resolve: Resolver = system_resolver
    timeout_s: float = 10.0

    def allows_host(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        for entry in self.allowlist:
            entry = entry.lower().rstrip(".")
            if entry.startswith("*."):
                if host.endswith(entry[1:]) and host != entry[2:]:
                    return True
            elif host == entry:
                return True
        return False


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (
        ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast or ip.is_reserved
    )


def check_image_url(url: str, policy: ImageUrlPolicy, param: str) -> tuple[str, int, str]:
    """(host, port, vetted address) of an http(s) URL the policy allows; ChatError otherwise.
    Every resolved address must be public: one private address refuses the URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid(param, "image URLs must be data: URLs or allowed http(s) URLs")
    host = parts.hostname
    if not policy.allows_host(host):
        raise ChatError(
            400,
            f"image URL host {host!r} is not allowed; send the image as a data: URL or add the "
            "host to CHAT_IMAGE_URL_ALLOWLIST",
            param=param,
            code="image_url_not_allowed",
        )
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = policy.resolve(host, port)
    except OSError:
        raise ChatError(
            400, f"image URL host {host!r} does not resolve", param=param, code="invalid_image_url"
        ) from None
    if not addresses or not all(is_public_address(a) for a in addresses):
        raise ChatError(
            400,
            f"image URL host {host!r} resolves to a non-public address",
            param=param,
            code="image_url_not_allowed",
        )
    return host, port, addresses[0]


def fetch_image_url(url: str, policy: ImageUrlPolicy, param: str) -> bytes:
    """GET an allowed image URL, connecting only to the vetted address (no second lookup a
    rebinding DNS could answer differently); redirects are re-checked hop by hop."""
    import urllib3

    for _hop in range(MAX_REDIRECTS + 1):
        host, port, address = check_image_url(url, policy, param)
        parts = urlsplit(url)
        pool: urllib3.HTTPConnectionPool
        if parts.scheme == "https":
            pool = urllib3.HTTPSConnectionPool(
                address, port, server_hostname=host, assert_hostname=host, timeout=policy.timeout_s
            )
        else:
            pool = urllib3.HTTPConnectionPool(address, port, timeout=policy.timeout_s)
        target = parts.path or "/"
        if parts.query:
            target += f"?{parts.query}"
        try:
            response = pool.urlopen(
                "GET",
                target,
                headers={"Host": parts.netloc.rsplit("@", 1)[-1]},
                redirect=False,
                retries=False,
                preload_content=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise ChatError(
                400, f"image URL could not be fetched: {exc}", param=param, code="invalid_image_url"
            ) from None
        try:
            if response.status in (301, 302, 303, 307, 308) and response.headers.get("Location"):
                url = urljoin(url, response.headers["Location"])
                continue
            if response.status != 200:
                raise ChatError(
                    400,
                    f"image URL answered HTTP {response.status}",
                    param=param,
                    code="invalid_image_url",
                )
            data = response.read(MAX_IMAGE_BYTES + 1, decode_content=True)
        finally:
            response.release_conn()
        if len(data) > MAX_IMAGE_BYTES:
            raise too_large(param)
        return bytes(data)
    raise ChatError(400, "image URL redirects too often", param=param, code="invalid_image_url")


def decode_data_url(url: str, param: str) -> bytes:
    match = _DATA_URL.match(url)
    if match is None:
        raise invalid(param, "image data: URLs must be base64 ('data:image/...;base64,...')")
    mime = (match.group("mime") or "").lower()
    if not mime.startswith("image/"):
        raise ChatError(
            400,
            f"the data: URL is {mime or 'untyped'}, not an image",
            param=param,
            code="invalid_image",
        )
    payload = url[match.end() :]
    # Checked before decoding, so an oversized body is refused without allocating it twice.
    if len(payload) * 3 // 4 > MAX_IMAGE_BYTES + 3:
        raise too_large(param)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(param, "the data: URL is not valid base64", "invalid_image") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise too_large(param)
    return data


def too_large(param: str) -> ChatError:
    return ChatError(
        413,
        f"the image is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MB",
        param=param,
        code="image_too_large",
    )


def load_prompt_image(
    url: str, param: str, policy: ImageUrlPolicy, fetch: Callable[..., bytes] = fetch_image_url
) -> bytes:
    """The prompt image's bytes, checked as an image the vectorizer accepts."""
    data = decode_data_url(url, param) if url.startswith("data:") else fetch(url, policy, param)
    try:
        images.inspect_image(data, "prompt.jpg")  # the type is checked by content
    except images.ImageRejected as exc:
        status = 413 if exc.code == images.TOO_LARGE else 400
        raise ChatError(
            status,
            f"the image is refused: {exc.message}",
            param=param,
            code="image_too_large" if status == 413 else "invalid_image",
        ) from None
    return data
