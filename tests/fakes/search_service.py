"""A local stand-in for the Azure AI Search REST API (the subset azure-search-documents uses).

Real HTTPS on 127.0.0.1 (a port chosen by the OS), one thread per request. The SDK refuses
plain-http endpoints, so the fake serves TLS with a throwaway self-signed certificate that
clients trust through ``connection_verify``:

    with FakeSearchService(api_key="k") as service:
        client = SearchIndexClient(service.endpoint, AzureKeyCredential("k"),
                                   connection_verify=service.ca_file)

Implemented: ``POST /indexes``, ``GET|PUT|DELETE /indexes('<name>')``,
``POST /indexes('<name>')/docs/search.index`` and ``.../docs/search.post.search`` with
``search``, ``searchFields``, ``vectorQueries`` (kind ``vector``), ``filter``, ``select``,
``top``, ``orderby`` (one field), ``count``. Filters are evaluated with the OData subset of
``imagerag.adapters.odata`` (string comparisons, and/or/not, search.in): enough for what the
adapter sends, and a syntax it cannot read is answered 400 as the service does.

Index definitions follow the service's attribute rules: ``searchable`` only on string fields
(and required on vector fields), vector fields neither filterable, sortable nor facetable,
collections not sortable. Attributes left unset take the service's defaults (true for string
fields: searchable, filterable, sortable, facetable, retrievable) and GET answers them all
explicitly, as the service does. ``PUT`` on an existing index may add fields and change
``retrievable``; any other change to an existing field is refused with the service's
``CannotChangeExistingField`` answer.

Queries the index cannot serve are answered with the service's 400 bodies (code, message
with ``Parameter name: ...``), as seen from Azure AI Search:

- ``searchFields``: ``Unknown field 'x' in search field list.`` /
  ``The field 'x' in the search field list is not searchable.``
- ``select``: ``Invalid expression: Could not find a property named 'x' on type
  'search.document'.`` / ``Invalid expression: 'x' is not a retrievable field. ...``
- ``filter``: the same "Could not find a property" text, ``x is not a filterable field.
  Only filterable fields can be used in filter expressions.``, or a syntax error;
- ``vectorQueries[].fields``: ``Unknown field 'x' in vector field list.`` (code
  ``InvalidRequestParameter``, detail ``UnknownField``) / ``The field 'x' in the vector field
  list is not a vector field.`` (``OperationNotAllowed``, ``Parameter name: vector.fields``).

Those answers are ordinary (the caller chose the fields), so they are not recorded as
violations. Every other request is checked against the contract (api-version, ``api-key``,
index definition, batch limits, actions, field names, types and vector length); a violation is
answered as the service would (400/401/413) and recorded in ``violations`` so tests can assert
there were none. Authentication: ``api-key`` equal to the configured key, or
``Authorization: Bearer <token>`` when a ``token`` is configured.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import math
import re
import ssl
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from imagerag.adapters import odata
from imagerag.ports import InvalidFilterError

SUPPORTED_API_VERSIONS = frozenset({"2024-07-01", "2025-09-01"})
MAX_ACTIONS = 1000
# "16 MB" per indexing request. Whether the service means 10**6 or 2**20 bytes is not
# documented; the stand-in holds clients to the stricter reading, which satisfies both.
MAX_BODY_BYTES = 16_000_000
MAX_TOP = 1000
DEFAULT_TOP = 50
ACTIONS = frozenset({"upload", "merge", "mergeOrUpload", "delete"})
VECTOR_TYPE = "Collection(Edm.Single)"
STRING_TYPES = frozenset({"Edm.String", "Collection(Edm.String)"})
ATTRIBUTES = ("key", "searchable", "filterable", "sortable", "facetable", "retrievable", "stored")
IMMUTABLE = (
    *(a for a in ATTRIBUTES if a != "retrievable"),
    "type",
    "analyzer",
    "searchAnalyzer",
    "indexAnalyzer",
    "normalizer",
    "dimensions",
    "vectorSearchProfile",
    "vectorEncoding",
)
_INDEX_PATH = re.compile(
    r"^/indexes\('(?P<name>[^']+)'\)(?P<rest>/docs/search\.(?:index|post\.search))?$"
)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,127}$")
_WORD = re.compile(r"\w+")


class ContractViolation(Exception):
    """Answered with ``status``; recorded unless it is an ordinary answer (404, 409, a filter
    or field the caller chose to send that the index cannot serve). ``code`` and ``details``
    are the service's error code and details when it sends them."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        record: bool = True,
        code: str | None = None,
        details: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.record = record and status not in (404, 409)
        self.code = code
        self.details = details


def _query_error(message: str, parameter: str, code: str = "") -> ContractViolation:
    """A 400 for a query parameter, in the service's classic shape."""
    return ContractViolation(
        400, f"{message}\r\nParameter name: {parameter}", record=False, code=code
    )


def _definition_error(detail: str) -> ContractViolation:
    return ContractViolation(
        400,
        f"The request is invalid. Details: definition : {detail}",
        code="InvalidRequestParameter",
        details=[{"code": "InvalidField", "message": f"{detail} Parameters: definition"}],
    )


@dataclass
class _Index:
    definition: dict[str, Any]
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def fields(self) -> dict[str, dict[str, Any]]:
        return {f["name"]: f for f in self.definition["fields"]}

    @property
    def key(self) -> str:
        return next(f["name"] for f in self.definition["fields"] if f.get("key"))


@dataclass
class RecordedRequest:
    method: str
    path: str
    status: int
    actions: int = 0  # documents in a search.index batch
    body_bytes: int = 0
    body: dict[str, Any] | None = None


class FakeSearchService:
    def __init__(self, *, api_key: str = "test-search-key", token: str | None = None) -> None:
        self.api_key = api_key
        self.token = token
        self.indexes: dict[str, _Index] = {}
        self.violations: list[str] = []
        self.requests: list[RecordedRequest] = []
        self.failing_keys: dict[str, int] = {}  # document key -> status it fails with
        self._faults: list[tuple[int, str | None]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._scratch = tempfile.TemporaryDirectory(prefix="fake-search-")
        self.ca_file = str(Path(self._scratch.name) / "cert.pem")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*_self_signed(Path(self._scratch.name)))
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"https://{host!s}:{port}"

    def __enter__(self) -> FakeSearchService:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._scratch.cleanup()

    def fail_next(self, count: int, *, status: int = 429, retry_after: str | None = "1") -> None:
        """Answer the next ``count`` requests with ``status`` (and Retry-After, if given)."""
        with self._lock:
            self._faults.extend([(status, retry_after)] * count)

    def requests_to(self, suffix: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith(suffix)]

    # ------------------------------------------------------------------ dispatch

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], Any]:
        url = urlsplit(target)
        record = RecordedRequest(method, url.path, 0, body_bytes=len(body))
        try:
            with self._lock:
                fault = self._faults.pop(0) if self._faults else None
            if fault is not None:
                status, retry_after = fault
                record.status = status
                with self._lock:
                    self.requests.append(record)
                extra = {"Retry-After": retry_after} if retry_after is not None else {}
                return status, extra, _error("Throttled" if status == 429 else "Unavailable", "")
            self._check_common(url.query, headers)
            payload = self._json(body) if body else None
            record.body = payload
            status, response = self._route(method, url.path, payload, len(body), record)
        except ContractViolation as exc:
            if exc.record:
                with self._lock:
                    self.violations.append(f"{method} {url.path}: {exc}")
            code = _code(exc.status) if exc.code is None else exc.code
            status, response = exc.status, _error(code, str(exc), exc.details)
        record.status = status
        with self._lock:
            self.requests.append(record)
        return status, {}, response

    def _check_common(self, query: str, headers: dict[str, str]) -> None:
        versions = parse_qs(query).get("api-version", [])
        if len(versions) != 1 or versions[0] not in SUPPORTED_API_VERSIONS:
            raise ContractViolation(400, f"api-version missing or unsupported: {versions}")
        bearer = headers.get("authorization", "")
        if self.token is not None and bearer == f"Bearer {self.token}":
            return
        if headers.get("api-key") != self.api_key:
            raise ContractViolation(401, "missing or wrong api-key header (or bearer token)")

    def _json(self, body: bytes) -> dict[str, Any]:
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise ContractViolation(400, f"body is not JSON: {exc}") from exc
        if not isinstance(payload, dict):
            raise ContractViolation(400, "body must be a JSON object")
        return payload

    def _route(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None,
        size: int,
        record: RecordedRequest,
    ) -> tuple[int, Any]:
        if path == "/indexes" and method == "POST" and payload is not None:
            return self._create_index(payload)
        match = _INDEX_PATH.match(path)
        if match is None:
            raise ContractViolation(404, f"no such resource {method} {path}")
        name, rest = match.group("name"), match.group("rest")
        with self._lock:
            index = self.indexes.get(name)
        if index is None and rest is None and method == "PUT" and payload is not None:
            if payload.get("name") != name:
                raise ContractViolation(400, "the index name in the body differs from the URL")
            return self._create_index(payload)
        if index is None:
            raise ContractViolation(404, f"No index with the name '{name}' was found")
        if rest is None and method == "GET":
            return 200, index.definition
        if rest is None and method == "PUT" and payload is not None:
            return self._update_index(index, name, payload)
        if rest is None and method == "DELETE":
            with self._lock:
                del self.indexes[name]
            return 204, None
        if rest == "/docs/search.index" and method == "POST" and payload is not None:
            return self._index_documents(index, payload, size, record)
        if rest == "/docs/search.post.search" and method == "POST" and payload is not None:
            return 200, self._search(index, payload)
        raise ContractViolation(400, f"unsupported request {method} {path}")

    # ------------------------------------------------------------------ indexes

    def _create_index(self, definition: dict[str, Any]) -> tuple[int, Any]:
        _check_definition(definition)
        stored = {**definition, "fields": [_with_defaults(f) for f in definition["fields"]]}
        with self._lock:
            if definition["name"] in self.indexes:
                raise ContractViolation(409, f"index '{definition['name']}' already exists")
            self.indexes[definition["name"]] = _Index(stored)
        return 201, stored

    def _update_index(
        self, index: _Index, name: str, definition: dict[str, Any]
    ) -> tuple[int, Any]:
        """Create-or-update on an existing index: fields may be added and ``retrievable``
        changed; any other change to an existing field is refused, as the service does."""
        if definition.get("name") != name:
            raise ContractViolation(400, "the index name in the body differs from the URL")
        _check_definition(definition)
        proposed = {f["name"]: _with_defaults(f) for f in definition["fields"]}
        for field_name, existing in index.fields.items():
            new = proposed.get(field_name)
            if new is None or _immutable(new) != _immutable(existing):
                message = f"Existing field '{field_name}' cannot be changed."
                raise ContractViolation(
                    400,
                    message,
                    record=False,
                    code="OperationNotAllowed",
                    details=[{"code": "CannotChangeExistingField", "message": message}],
                )
        stored = {**definition, "fields": list(proposed.values())}
        with self._lock:
            index.definition = stored
        return 200, stored

    # ------------------------------------------------------------------ documents

    def _index_documents(
        self, index: _Index, payload: dict[str, Any], size: int, record: RecordedRequest
    ) -> tuple[int, Any]:
        if size > MAX_BODY_BYTES:
            raise ContractViolation(413, f"request body of {size} bytes is over 16 MB")
        actions = payload.get("value")
        if not isinstance(actions, list) or not actions:
            raise ContractViolation(400, "'value' must be a non-empty array of actions")
        record.actions = len(actions)
        if len(actions) > MAX_ACTIONS:
            raise ContractViolation(400, f"{len(actions)} actions in one batch (max 1000)")
        for action in actions:
            self._check_action(index, action)
        results = []
        with self._lock:
            for action in actions:
                results.append(self._apply(index, action))
        status = 200 if all(r["status"] for r in results) else 207
        return status, {"value": results}

    def _check_action(self, index: _Index, action: dict[str, Any]) -> None:
        kind = action.get("@search.action")
        if kind not in ACTIONS:
            raise ContractViolation(400, f"invalid @search.action {kind!r}")
        fields = index.fields
        key = action.get(index.key)
        if not isinstance(key, str) or not key:
            raise ContractViolation(400, f"action without a string key field {index.key!r}")
        if kind == "delete" and set(action) - {"@search.action", index.key}:
            raise ContractViolation(400, "delete actions carry only the key")
        for name, value in action.items():
            if name == "@search.action":
                continue
            if name not in fields:
                raise ContractViolation(400, f"The property '{name}' does not exist on the index")
            _check_value(fields[name], value)

    def _apply(self, index: _Index, action: dict[str, Any]) -> dict[str, Any]:
        kind = action["@search.action"]
        key = action[index.key]
        body = {k: v for k, v in action.items() if k != "@search.action"}
        if key in self.failing_keys:
            return _result(key, self.failing_keys[key], "injected failure")
        if kind == "delete":
            index.documents.pop(key, None)
            return _result(key, 200)
        existing = index.documents.get(key)
        if kind == "merge":
            if existing is None:
                return _result(key, 404, "Document not found.")
            existing.update(body)
        elif kind == "mergeOrUpload" and existing is not None:
            existing.update(body)
        else:
            created = existing is None
            index.documents[key] = body
            return _result(key, 201 if created else 200)
        return _result(key, 200)

    # ------------------------------------------------------------------ search

    def _search(self, index: _Index, payload: dict[str, Any]) -> dict[str, Any]:
        known = {
            "search",
            "searchFields",
            "filter",
            "select",
            "top",
            "skip",
            "orderby",
            "count",
            "vectorQueries",
            "queryType",
            "searchMode",
            "semanticConfiguration",
        }
        unknown = set(payload) - known
        if unknown:
            raise ContractViolation(400, f"unsupported search parameters {sorted(unknown)}")
        fields = index.fields
        top = payload.get("top", DEFAULT_TOP)
        if not isinstance(top, int) or not 0 <= top <= MAX_TOP:
            raise ContractViolation(
                400, f"top {top!r} must be 0..{MAX_TOP} (this fake does not page)"
            )
        search_fields = _names(payload.get("searchFields"))
        for name in search_fields:
            if name not in fields:
                raise _query_error(f"Unknown field '{name}' in search field list.", "searchFields")
            if not _full_text(fields[name]):
                raise _query_error(
                    f"The field '{name}' in the search field list is not searchable.",
                    "searchFields",
                )
        select = _names(payload.get("select"))
        for name in select:
            if name not in fields:
                raise _query_error(_no_property(name), "$select")
            if not fields[name]["retrievable"]:
                raise _query_error(
                    f"Invalid expression: '{name}' is not a retrievable field. Only fields "
                    "marked as retrievable in the index can be used in $select.",
                    "$select",
                )
        condition = _parsed_filter(fields, payload.get("filter"))
        orderby = payload.get("orderby")
        order_name, _, direction = (orderby or "").partition(" ")
        if orderby and order_name not in fields:
            raise _query_error(_no_property(order_name), "$orderby")
        if orderby and not fields[order_name]["sortable"]:
            raise _query_error(
                f"Invalid expression: {order_name} is not a sortable field. Only sortable "
                "fields can be used in $orderby expressions.",
                "$orderby",
            )
        with self._lock:
            documents = [dict(d) for d in index.documents.values()]
        documents = _filtered(documents, condition)
        semantic = _semantic_configuration(index, payload)
        scored = self._scored(index, documents, payload)
        if orderby:
            scored.sort(key=lambda pair: pair[1].get(order_name) or "", reverse=direction == "desc")
        else:
            scored.sort(key=lambda pair: -pair[0])
        skip = payload.get("skip", 0)
        page = scored[skip : skip + top]
        shown_fields = select or [n for n, f in fields.items() if f["retrievable"]]
        values = []
        best = max((score for score, _ in page), default=0.0) or 1.0
        for score, document in page:
            shown = {k: document.get(k) for k in shown_fields}
            ranked = {"@search.rerankerScore": 4.0 * score / best} if semantic else {}
            values.append({"@search.score": score, **ranked, **shown})
        answer: dict[str, Any] = {"value": values}
        if payload.get("count"):
            answer["@odata.count"] = len(scored)
        return answer

    def _scored(
        self, index: _Index, documents: list[dict[str, Any]], payload: dict[str, Any]
    ) -> list[tuple[float, dict[str, Any]]]:
        queries = payload.get("vectorQueries") or []
        text = payload.get("search")
        if queries:
            if len(queries) != 1:
                raise ContractViolation(400, "this fake answers one vector query")
            return self._vector_scores(index, documents, queries[0])
        if text and text != "*":
            return self._text_scores(index, documents, text, payload.get("searchFields"))
        return [(1.0, d) for d in documents]

    def _vector_scores(
        self, index: _Index, documents: list[dict[str, Any]], query: dict[str, Any]
    ) -> list[tuple[float, dict[str, Any]]]:
        if query.get("kind") != "vector":
            raise ContractViolation(400, f"vector query kind {query.get('kind')!r}")
        name = query.get("fields")
        if not isinstance(name, str) or "," in name:
            raise ContractViolation(400, f"this fake searches one vector field, not {name!r}")
        spec = index.fields.get(name)
        if spec is None:
            message = f"Unknown field '{name}' in vector field list."
            raise ContractViolation(
                400,
                message,
                record=False,
                code="InvalidRequestParameter",
                details=[{"code": "UnknownField", "message": message}],
            )
        if "dimensions" not in spec:
            raise _query_error(
                f"The field '{name}' in the vector field list is not a vector field.",
                "vector.fields",
                code="OperationNotAllowed",
            )
        vector = query.get("vector")
        if not isinstance(vector, list) or len(vector) != spec["dimensions"]:
            raise ContractViolation(400, f"query vector must have {spec['dimensions']} numbers")
        k = query.get("k")
        if not isinstance(k, int) or k < 1:
            raise ContractViolation(400, "vector query needs k >= 1")
        q = np.asarray(vector, dtype=np.float64)
        scored = []
        for document in documents:
            stored = document.get(name)
            if stored is None:
                continue
            v = np.asarray(stored, dtype=np.float64)
            denominator = float(np.linalg.norm(q) * np.linalg.norm(v)) or 1.0
            cosine = float(q @ v) / denominator
            scored.append((1.0 / (2.0 - cosine), document))  # the service's cosine score
        scored.sort(key=lambda pair: -pair[0])
        return scored[:k]

    def _text_scores(
        self,
        index: _Index,
        documents: list[dict[str, Any]],
        text: str,
        search_fields: str | None,
    ) -> list[tuple[float, dict[str, Any]]]:
        searchable = [n for n, f in index.fields.items() if _full_text(f)]
        names = _names(search_fields) or searchable
        terms = [t.lower() for t in _WORD.findall(text)]
        bags = [
            Counter(w.lower() for n in names for w in _WORD.findall(d.get(n) or ""))
            for d in documents
        ]
        scored = []
        for document, bag in zip(documents, bags, strict=True):
            score = 0.0
            for term in terms:
                df = sum(1 for b in bags if term in b)
                if bag[term]:
                    idf = math.log(1 + (len(bags) - df + 0.5) / (df + 0.5))
                    score += idf * bag[term] / (bag[term] + 1.2)
            if score > 0:
                scored.append((score, document))
        return scored


# ---------------------------------------------------------------------- contract checks


def _semantic_configuration(index: _Index, payload: dict[str, Any]) -> str | None:
    """The configuration a semantic query ranks with (None: not a semantic query). As the
    service: queryType simple|full|semantic; semantic needs search text and a configuration
    of the index, named or its default; semanticConfiguration without semantic is refused."""
    query_type = payload.get("queryType", "simple")
    if query_type not in ("simple", "full", "semantic"):
        raise _query_error(f"Invalid queryType '{query_type}'.", "queryType")
    named = payload.get("semanticConfiguration")
    if query_type != "semantic":
        if named is not None:
            raise _query_error(
                "semanticConfiguration requires queryType 'semantic'.", "semanticConfiguration"
            )
        return None
    if not payload.get("search"):
        raise _query_error("A semantic query requires search text.", "search")
    semantic = index.definition.get("semantic") or {}
    names = [c.get("name") for c in semantic.get("configurations") or []]
    chosen = named or semantic.get("defaultConfiguration")
    if chosen not in names:
        raise _query_error(
            f"Unknown semantic configuration '{chosen}'. Defined: {names}.",
            "semanticConfiguration",
        )
    return str(chosen)


def _check_definition(definition: dict[str, Any]) -> None:
    name = definition.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,127}", name):
        raise ContractViolation(400, f"invalid index name {name!r}")
    fields = definition.get("fields")
    if not isinstance(fields, list) or not fields:
        raise ContractViolation(400, "an index needs fields")
    keys = [f for f in fields if f.get("key")]
    if len(keys) != 1 or keys[0].get("type") != "Edm.String":
        raise ContractViolation(400, "an index needs exactly one key field of type Edm.String")
    search = definition.get("vectorSearch") or {}
    algorithms = {a.get("name"): a for a in search.get("algorithms") or []}
    profiles = {p.get("name"): p for p in search.get("profiles") or []}
    for profile_name, profile in profiles.items():
        if not isinstance(profile_name, str) or not _NAME.match(profile_name):
            raise ContractViolation(400, f"invalid vector profile name {profile_name!r}")
        algorithm = algorithms.get(profile.get("algorithm"))
        if algorithm is None:
            raise ContractViolation(400, f"profile {profile_name!r} names an unknown algorithm")
        _check_hnsw(algorithm)
    for spec in fields:
        _check_attributes(spec)
        if spec.get("type") != VECTOR_TYPE:
            continue
        dims = spec.get("dimensions")
        if not isinstance(dims, int) or not 2 <= dims <= 4096:
            raise ContractViolation(400, f"vector field {spec.get('name')!r} needs dimensions")
        if spec.get("vectorSearchProfile") not in profiles:
            raise ContractViolation(400, f"vector field {spec.get('name')!r} needs a profile")


def _check_attributes(spec: dict[str, Any]) -> None:
    """The service's attribute rules for one field (as set; unset ones take defaults)."""
    name, kind = spec.get("name"), spec.get("type")
    for attribute in ATTRIBUTES:
        if spec.get(attribute) not in (None, True, False):
            raise _definition_error(f"The field '{name}' has a non-boolean '{attribute}'.")
    if kind == VECTOR_TYPE:
        if spec.get("searchable") is False:
            raise _definition_error(f"The vector field '{name}' must be searchable.")
        for attribute in ("filterable", "sortable", "facetable"):
            if spec.get(attribute):
                raise _definition_error(
                    f"The vector field '{name}' cannot be {attribute}; vector fields are "
                    "only searchable and retrievable."
                )
        if spec.get("stored") is False and spec.get("retrievable") is True:
            raise _definition_error(f"The field '{name}' cannot be retrievable if not stored.")
        return
    if spec.get("stored") is False:
        raise _definition_error(f"Only vector fields can be not stored, not '{name}'.")
    if spec.get("searchable") and kind not in STRING_TYPES:
        raise _definition_error(
            f"The field '{name}' of type '{kind}' cannot be searchable: only string fields "
            "can be full-text searchable."
        )
    if spec.get("sortable") and str(kind).startswith("Collection("):
        raise _definition_error(f"The collection field '{name}' cannot be sortable.")
    if spec.get("key") and spec.get("retrievable") is False:
        raise _definition_error(f"The key field '{name}' must be retrievable.")


def _with_defaults(spec: dict[str, Any]) -> dict[str, Any]:
    """The field as the service stores and returns it: every attribute explicit."""
    kind = spec.get("type")
    if kind == VECTOR_TYPE:
        defaults = {"searchable": True, "filterable": False, "sortable": False}
        defaults |= {"facetable": False, "retrievable": True, "stored": True}
    else:
        text = kind in STRING_TYPES
        single = not str(kind).startswith("Collection(")
        defaults = {"searchable": text, "filterable": True, "sortable": single}
        defaults |= {"facetable": True, "retrievable": True, "stored": True}
    out = {"key": False, **defaults}
    out.update({k: v for k, v in spec.items() if v is not None})
    return out


def _immutable(spec: dict[str, Any]) -> dict[str, Any]:
    """What cannot change on an existing field (all but ``retrievable`` and synonym maps)."""
    return {k: spec.get(k) for k in IMMUTABLE}


def _full_text(spec: dict[str, Any]) -> bool:
    return bool(spec["searchable"]) and spec["type"] in STRING_TYPES


def _names(value: str | None) -> list[str]:
    return [s.strip() for s in (value or "").split(",") if s.strip()]


def _no_property(name: str) -> str:
    return (
        f"Invalid expression: Could not find a property named '{name}' on type 'search.document'."
    )


class _AnyName:
    """Every name parses as a field; the stand-in checks them against the index afterwards."""

    def __contains__(self, name: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _parsed_filter(
    fields: dict[str, dict[str, Any]], expression: str | None
) -> odata.Filter | None:
    if not expression:
        return None
    try:
        condition = odata.parse(expression, _AnyName())
    except InvalidFilterError as exc:
        # The OData subset the stand-in reads; a real syntax error is answered like this too.
        raise _query_error(f"Invalid expression: {exc}", "$filter") from exc
    for name in _filter_fields(condition):
        if name not in fields:
            raise _query_error(_no_property(name), "$filter")
        if not fields[name]["filterable"]:
            raise _query_error(
                f"Invalid expression: {name} is not a filterable field. Only filterable fields "
                "can be used in filter expressions.",
                "$filter",
            )
        if fields[name]["type"] != "Edm.String":
            raise ContractViolation(400, f"this fake filters string fields only, not {name!r}")
    return condition


def _filter_fields(node: odata.Filter) -> list[str]:
    if isinstance(node, odata.Compare | odata.In):
        return [node.field]
    if isinstance(node, odata.Not):
        return _filter_fields(node.operand)
    return [name for operand in node.operands for name in _filter_fields(operand)]


def _filtered(
    documents: list[dict[str, Any]], condition: odata.Filter | None
) -> list[dict[str, Any]]:
    if condition is None:
        return documents
    columns = {}
    for name in dict.fromkeys(_filter_fields(condition)):
        raw = [d.get(name) for d in documents]
        values = np.array([v or "" for v in raw], dtype=np.dtypes.StringDType())
        columns[name] = (values, np.array([v is None for v in raw], dtype=np.bool_))
    mask = odata.evaluate(condition, columns)
    return [d for d, keep in zip(documents, mask.tolist(), strict=True) if keep]


def _check_hnsw(algorithm: dict[str, Any]) -> None:
    if algorithm.get("kind") != "hnsw":
        raise ContractViolation(400, f"algorithm kind {algorithm.get('kind')!r} (expected hnsw)")
    parameters = algorithm.get("hnswParameters") or {}
    if parameters.get("metric", "cosine") != "cosine":  # the service's default is cosine
        raise ContractViolation(400, f"metric {parameters.get('metric')!r} (expected cosine)")
    for key, low, high in (("m", 4, 10), ("efConstruction", 100, 1000), ("efSearch", 100, 1000)):
        value = parameters.get(key)
        if value is not None and not low <= value <= high:
            raise ContractViolation(400, f"hnsw {key}={value} outside {low}..{high}")


def _check_value(spec: dict[str, Any], value: Any) -> None:
    kind = spec["type"]
    if value is None:
        return
    if kind == "Edm.String" and not isinstance(value, str):
        raise ContractViolation(400, f"field {spec['name']!r} expects a string")
    if kind == "Collection(Edm.Single)":
        if not isinstance(value, list) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in value
        ):
            raise ContractViolation(400, f"field {spec['name']!r} expects an array of numbers")
        if len(value) != spec["dimensions"]:
            raise ContractViolation(
                400,
                f"vector field {spec['name']!r} has {len(value)} numbers, "
                f"the index declares {spec['dimensions']}",
            )


def _result(key: str, status: int, message: str | None = None) -> dict[str, Any]:
    return {"key": key, "status": status < 300, "statusCode": status, "errorMessage": message}


def _error(code: str, message: str, details: list[dict[str, str]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return {"error": body}


def _code(status: int) -> str:
    return {400: "InvalidRequest", 401: "Unauthorized", 404: "ResourceNotFound"}.get(
        status, "Conflict" if status == 409 else "RequestEntityTooLarge"
    )


def _self_signed(directory: Path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, as PEM files in ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_file), str(key_file)


def _handler_for(service: FakeSearchService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra, payload = service.handle(self.command, self.path, headers, body)
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            if data:
                self.send_header("Content-Type", "application/json; odata.metadata=minimal")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

    return Handler
