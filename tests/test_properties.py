"""Property tests (hypothesis) of the parsers that read what users send: the metadata file, the
chat request, the OData filter and the blob path rule. Whatever the input, each raises only
its documented error, and what it accepts can be written on (UTF-8 JSON) and run.

Deterministic and bounded for CI: derandomized, no example database, a fixed number of
examples per property (the module runs in a few seconds)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from test_indexes import make_doc

from imagerag import manifest
from imagerag.adapters import odata
from imagerag.adapters.local_index import LocalImageIndex
from imagerag.chat import request as chat_request
from imagerag.chat.errors import ChatError
from imagerag.chat.response import error_response
from imagerag.ports import InvalidFilterError, ModelInfo

BOUNDED = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --------------------------------------------------------------------------- strategies

# Every code point, lone surrogates included (hypothesis leaves category Cs out by default).
ANY_CHAR = st.characters(exclude_categories=())
TRICKY = ["", " ", ".", "..", "a/../b", "/x", "x/", "\\", "\x00", "\x7f", "\ud800", "\udfff"]
TRICKY += ["\ud83d\ude00", "é", "https://h/c/x.png", "x" * 1025, "%2e%2e", "a//b"]
TEXT = st.text(ANY_CHAR, max_size=12) | st.sampled_from(TRICKY)

JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)

JSON_TOKENS = ["[", "]", "{", "}", ",", ":", '"a"', '"\\ud800"', "1", "-0", "1e999", "NaN"]
JSON_TOKENS += ["Infinity", "null", "true", " ", '"\\', "\ufeff", "9" * 4400]


def nesting(depth: int, closed: bool) -> str:
    return "[" * depth + ("]" * depth if closed else "")


# JSON text json.dumps cannot write: token soup, deep nesting, numbers int() refuses.
RAW_JSON = (
    st.lists(st.sampled_from(JSON_TOKENS), max_size=30).map("".join)
    | st.builds(nesting, st.integers(0, 3000), st.booleans())
    | st.integers(4200, 4400).map(lambda digits: '[{"n": ' + "7" * digits + "}]")
)


def encoded(value: Any) -> bytes:
    # ensure_ascii: a lone surrogate becomes the escape "\ud800", as a client would send it.
    return json.dumps(value).encode()


# --------------------------------------------------------------------------- metadata files

ENTRIES = st.fixed_dictionaries(
    {},
    optional={
        "image_blob_path": TEXT | JSON_VALUES,
        "description": TEXT | st.just("d" * (manifest.MAX_DESCRIPTION_CHARS + 1)) | JSON_VALUES,
        "extra": JSON_VALUES,
    },
)
VALID_ENTRIES = st.fixed_dictionaries(
    {"image_blob_path": st.sampled_from(["a.png", "d/b.jpg", "é/ü.png"]), "description": TEXT}
)
MANIFESTS = (
    st.lists(VALID_ENTRIES | ENTRIES | JSON_VALUES, max_size=6).map(encoded)
    | JSON_VALUES.map(encoded)
    | RAW_JSON.map(str.encode)
    | st.binary(max_size=40)
)
RULES = {"name", "encoding", "json", "shape", "too_many_entries"}


@BOUNDED
@given(MANIFESTS)
def test_parse_manifest_raises_only_manifest_errors(data: bytes) -> None:
    try:
        result = manifest.parse_manifest(data)
    except manifest.ManifestError as exc:
        assert exc.rule in RULES
        exc.message.encode("utf-8")
        return
    rows = [asdict(e) for e in result.entries] + [asdict(p) for p in result.problems]
    # Every element of the array gets exactly one row: an entry or a problem.
    assert sorted(row["index"] for row in rows) == list(range(result.count))
    # The plan step writes these rows as UTF-8 JSON (partitions, report).
    json.dumps(rows, ensure_ascii=False).encode("utf-8")
    for entry in result.entries:
        assert manifest.blob_path_problem(entry.image_blob_path) is None
        assert len(entry.description) <= manifest.MAX_DESCRIPTION_CHARS


# --------------------------------------------------------------------------- chat requests

# Bodies are valid ones with at most one value replaced anywhere (a wild JSON value or text):
# every check of parse_request is reached, and about a third of the bodies are accepted.
PLAIN_TEXT = st.text(max_size=10)  # no lone surrogates
PARTS = st.sampled_from(["text", "image_url"]).flatmap(
    lambda kind: (
        st.fixed_dictionaries({"type": st.just(kind), "text": PLAIN_TEXT})
        if kind == "text"
        else st.fixed_dictionaries(
            {"type": st.just(kind), "image_url": st.fixed_dictionaries({"url": st.just("data:,x")})}
        )
    )
)
TURNS = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["system", "assistant", "user"]),
        "content": PLAIN_TEXT | st.lists(PARTS.filter(lambda p: p["type"] == "text"), max_size=2),
    }
)
QUESTIONS = st.fixed_dictionaries(
    {"role": st.just("user"), "content": PLAIN_TEXT | st.lists(PARTS, min_size=1, max_size=3)}
)
PARAMETERS = st.fixed_dictionaries(
    {"index_name": st.just("images-v")},
    optional={
        "filter": PLAIN_TEXT,
        "query_type": st.sampled_from(chat_request.QUERY_TYPES),
        "top_n_documents": st.integers(1, chat_request.MAX_TOP_N),
        "strictness": st.integers(1, 5),
        "in_scope": st.booleans(),
        "role_information": PLAIN_TEXT,
        "include_contexts": st.lists(st.sampled_from(chat_request.CONTEXTS), max_size=3),
        "fields_mapping": st.fixed_dictionaries(
            {},
            optional={
                "image_vector_fields": st.just(["image_vector"]),
                "content_fields": st.just(["description"]),
                "title_field": st.none() | st.just("title"),
            },
        ),
    },
)
VALID_BODIES = st.fixed_dictionaries(
    {
        "messages": st.builds(lambda turns, q: [*turns, q], st.lists(TURNS, max_size=3), QUESTIONS),
        "data_sources": st.builds(
            lambda p: [{"type": "azure_search", "parameters": p}], PARAMETERS
        ),
    },
    optional={"stream": st.booleans(), "model": PLAIN_TEXT},
)
P = ("data_sources", 0, "parameters")
WHERE = [("stream",), ("model",), ("extra",), ("messages",), ("messages", 0)]
WHERE += [("messages", 0, "role"), ("messages", -1, "content"), ("messages", -1, "name")]
WHERE += [("data_sources",), ("data_sources", 0), ("data_sources", 0, "type"), P]
WHERE += [(*P, name) for name in ("index_name", "filter", "query_type", "top_n_documents")]
WHERE += [(*P, name) for name in ("strictness", "in_scope", "role_information")]
WHERE += [(*P, "include_contexts"), (*P, "fields_mapping"), (*P, "fields_mapping", "title_field")]


def replaced(body: dict[str, Any], change: tuple[tuple[Any, ...], Any] | None) -> dict[str, Any]:
    if change is not None:
        *parents, last = change[0]
        target: Any = body
        for key in parents:
            target = target.setdefault(key, {}) if isinstance(key, str) else target[key]
        target[last] = change[1]
    return body


CHAT_BODIES = (
    st.builds(
        replaced, VALID_BODIES, st.none() | st.tuples(st.sampled_from(WHERE), JSON_VALUES | TEXT)
    ).map(encoded)
    | RAW_JSON.map(str.encode)
    | st.binary(max_size=40)
)


@BOUNDED
@given(CHAT_BODIES)
def test_parse_request_raises_only_chat_errors(body: bytes) -> None:
    try:
        parsed = chat_request.parse_request(body, default_index="images-v")
    except ChatError as exc:
        assert exc.status in (400, 413)
        # The refusal itself must be sendable: error_response encodes it as UTF-8 JSON.
        error_response(exc)
        return
    # The answerer sends the messages on as UTF-8 JSON; the request parameters too.
    json.dumps(parsed.messages, ensure_ascii=False).encode("utf-8")
    json.dumps(asdict(parsed.data_source), ensure_ascii=False).encode("utf-8")


# --------------------------------------------------------------------------- OData filters

FIELDS = ("id", "source")
FILTER_TOKENS = ["(", ")", ",", "not", "and", "or", "eq", "ne", "gt", "ge", "lt", "le", "null"]
FILTER_TOKENS += ["'doc-0001'", "'c/1.json'", "'it''s'", "''", "'doc-0001,doc-0002'", "'|'"]
FILTER_TOKENS += ["search.in", "search.ismatch", "geo.distance", "id", "source", "nosuch", "3"]
FILTER_TOKENS += ["true", "'", "/", "tags/any(t: t eq 'x')", "NOT", "Eq", "\ud800"]

LEAVES = st.builds(
    "{} {} {}".format,
    st.sampled_from(FIELDS),
    st.sampled_from(["eq", "ne", "gt", "ge", "lt", "le"]),
    st.sampled_from(["'doc-0001'", "'c/1.json'", "''", "null", "'doc-0003'"]),
) | st.builds(
    "search.in({}, {})".format,
    st.sampled_from(FIELDS),
    st.sampled_from(["'doc-0001,doc-0002'", "'doc-0001 c/0.json'", "''"]),
)
WELL_FORMED = st.recursive(
    LEAVES,
    lambda inner: (
        st.builds("({}) {} ({})".format, inner, st.sampled_from(["and", "or"]), inner)
        | inner.map("not ({})".format)
        | inner.map("not {}".format)
    ),
    max_leaves=10,
)
FILTERS = (
    WELL_FORMED
    | st.lists(st.sampled_from(FILTER_TOKENS), max_size=25).map(" ".join)
    | st.lists(st.sampled_from(FILTER_TOKENS), max_size=25).map("".join)
    | st.text(ANY_CHAR, max_size=30)
    | st.builds(
        "{}{}".format,
        st.builds(
            lambda times, unit: unit * times,
            st.integers(0, 3000),
            st.sampled_from(["(", "not ", "not (", "( not "]),
        ),
        WELL_FORMED,
    )
)

MODEL = ModelInfo(name="efficientnet-lite0", version="1", dimensions=4, supports_text=False)


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> LocalImageIndex:
    local = LocalImageIndex(directory=tmp_path_factory.mktemp("props") / "index", name="p-v")
    local.ensure(MODEL)
    local.upsert([make_doc(i, model=MODEL, source=f"c/{i % 2}.json") for i in range(5)])
    return local


@BOUNDED
@given(expression=FILTERS)
def test_odata_raises_only_invalid_filter_and_what_it_accepts_runs(
    index: LocalImageIndex, expression: str
) -> None:
    try:
        node = odata.parse(expression, FIELDS)
    except InvalidFilterError as exc:
        str(exc).encode("utf-8")  # quoted with repr: sendable in a 400
        return
    assert isinstance(odata.to_sql(node), str)
    # evaluate (vector search) and to_sql (DataFusion, text search) select the same rows.
    by_vector = index.vector_search(
        make_doc(0, model=MODEL).image_vector, top=10, filter=expression
    )
    by_text = index.text_search("photo", top=10, filter=expression)
    assert {h.id for h in by_vector} == {h.id for h in by_text}


# --------------------------------------------------------------------------- blob paths

SEGMENTS = st.sampled_from(TRICKY + ["a", "b.png", "%2F", ":", "C:", " x "]) | st.text(
    ANY_CHAR, max_size=4
)
PATHS = st.lists(SEGMENTS, max_size=6).map("/".join) | st.text(ANY_CHAR, max_size=40)


@BOUNDED
@given(PATHS)
def test_blob_path_problem_never_raises_and_passes_only_clean_paths(path: str) -> None:
    reason = manifest.blob_path_problem(path)
    if reason is not None:
        assert isinstance(reason, str) and reason
        return
    segments = path.split("/")
    assert path.strip() and len(path) <= manifest.MAX_BLOB_PATH_LENGTH
    assert not path.startswith("/") and not path.endswith("/")
    assert "://" not in path and "\\" not in path
    assert "." not in segments and ".." not in segments
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in path)
    path.encode("utf-8")  # no lone surrogate: blob names travel as UTF-8


def _accepted(parse: Any) -> Any:
    def accepts(value: Any) -> bool:
        try:
            return bool(parse(value))
        except (manifest.ManifestError, ChatError, InvalidFilterError):
            return False

    return accepts


@pytest.mark.parametrize(
    ("strategy", "accepts"),
    [
        (MANIFESTS, _accepted(lambda data: manifest.parse_manifest(data).entries)),
        (CHAT_BODIES, _accepted(lambda body: chat_request.parse_request(body, default_index="i"))),
        (FILTERS, _accepted(lambda expression: odata.parse(expression, FIELDS))),
        (PATHS, lambda path: manifest.blob_path_problem(path) is None),
    ],
    ids=["manifest", "chat", "odata", "blob-path"],
)
def test_each_strategy_also_reaches_accepted_inputs(strategy: Any, accepts: Any) -> None:
    """A property over inputs that are all refused would test only the first check."""
    # Generation only: the first accepted value is enough, shrinking it would only cost time.
    find(strategy, accepts, settings=settings(BOUNDED, max_examples=2000, phases=[Phase.generate]))
