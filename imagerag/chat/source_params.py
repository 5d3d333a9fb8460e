"""The ``azure_search`` parameters that name other services: ``endpoint``,
``authentication`` and ``embedding_dependency``. Their shape is checked while parsing; what
they name is checked against this app's configuration before searching (:func:`check`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from imagerag.chat.errors import invalid

AUTH_TYPES = {
    # type -> the string fields it requires (2024-10-21 document, plus access_token of the
    # previews); the app searches with its own identity, so the values are not used.
    "api_key": ("key",),
    "system_assigned_managed_identity": (),
    "user_assigned_managed_identity": ("managed_identity_resource_id",),
    "access_token": ("access_token",),
}
EMBEDDING_TYPES = ("deployment_name", "endpoint")


@dataclass(frozen=True, slots=True)
class Authentication:
    type: str


@dataclass(frozen=True, slots=True)
class EmbeddingDependency:
    type: str  # deployment_name | endpoint
    name: str  # the deployment name, or the endpoint URL


def endpoint(value: Any, where: str) -> str | None:
    """An absolute http(s) URL (``format: uri``), or None when not given."""
    if value is None:
        return None
    if not isinstance(value, str) or not _is_url(value):
        raise invalid(where, f"'{where}' must be an absolute https:// URL")
    return value


def authentication(value: Any, where: str) -> Authentication | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid(where, f"'{where}' must be an object", "invalid_type")
    kind = value.get("type")
    if kind not in AUTH_TYPES:
        raise invalid(f"{where}.type", f"'{where}.type' must be one of {', '.join(AUTH_TYPES)}")
    _strings(value, AUTH_TYPES[kind], where)
    return Authentication(type=kind)


def embedding_dependency(value: Any, where: str) -> EmbeddingDependency | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid(where, f"'{where}' must be an object", "invalid_type")
    kind = value.get("type")
    if kind == "deployment_name":
        _strings(value, ("deployment_name",), where)
        return EmbeddingDependency(type=kind, name=value["deployment_name"])
    if kind == "endpoint":
        url = endpoint(value.get("endpoint"), f"{where}.endpoint")
        if url is None:
            raise invalid(f"{where}.endpoint", f"'{where}.endpoint' is required")
        auth = authentication(value.get("authentication"), f"{where}.authentication")
        if auth is None or auth.type != "api_key":
            raise invalid(
                f"{where}.authentication", f"'{where}.authentication' must be an api_key object"
            )
        return EmbeddingDependency(type=kind, name=url)
    raise invalid(f"{where}.type", f"'{where}.type' must be one of {', '.join(EMBEDDING_TYPES)}")


def check(
    *,
    where: str,
    endpoint: str | None,
    search_endpoint: str | None,
    dependency: EmbeddingDependency | None,
    vectorizer_model: str,
    vectorizer_endpoint: str | None,
) -> None:
    """What the parameters name must be what this app uses: it has one search service and
    one vectorizer, and a request cannot redirect either.

    Offline (embedded index) any ``endpoint`` is accepted and unused: the spec makes it
    required, so every client written for Azure sends one, and the app searches only its
    embedded index whatever it names."""
    if (
        endpoint is not None
        and search_endpoint is not None
        and not same_service(endpoint, search_endpoint)
    ):
        raise invalid(
            f"{where}.endpoint",
            f"'{where}.endpoint' {endpoint!r} is not the search service this app is configured "
            f"with ({search_endpoint}); omit it or send the configured one",
        )
    if dependency is None:
        return
    if dependency.type == "deployment_name" and dependency.name != vectorizer_model:
        raise invalid(
            f"{where}.embedding_dependency.deployment_name",
            f"deployment {dependency.name!r} names no deployment of this app: queries are "
            f"vectorized with {vectorizer_model!r}",
        )
    if dependency.type == "endpoint" and not same_service(dependency.name, vectorizer_endpoint):
        raise invalid(
            f"{where}.embedding_dependency.endpoint",
            f"{dependency.name!r} is not the vectorizer this app is configured with "
            f"({vectorizer_endpoint or vectorizer_model})",
        )


def same_service(url: str, configured: str | None) -> bool:
    """Same scheme and host (case-insensitive), whatever the path or trailing slash."""
    if configured is None:
        return False
    a, b = urlsplit(url), urlsplit(configured)
    return (a.scheme.lower(), a.netloc.lower()) == (b.scheme.lower(), b.netloc.lower())


def _is_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("https", "http") and bool(parts.netloc)


def _strings(value: dict[str, Any], names: tuple[str, ...], where: str) -> None:
    for name in names:
        if not isinstance(value.get(name), str) or not value[name]:
            raise invalid(f"{where}.{name}", f"'{where}.{name}' must be a non-empty string")
