"""Issue 10, item 4: no input becomes a 500 or a traceback. Each case is one the probe sent:
chat bodies and OData filters (in-process through ``endpoint.respond`` with the unit fakes and
a real local index, then once over HTTP against devhost), metadata files dropped into Azurite
(devhost ingests them), and the ingestion status of a Failed instance."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from ingestion_driver import Driver
from sample_images import picture_bytes
from test_chat_unit import LITE, FakeVectorizer, P, deps, params, text, user
from test_indexes import make_doc

from imagerag import config, manifest, naming
from imagerag.adapters import odata
from imagerag.adapters.local_index import LocalImageIndex
from imagerag.chat import endpoint, request
from imagerag.ports import InvalidFilterError

REPO = Path(__file__).resolve().parent.parent
QUESTION = [{"role": "user", "content": "a photo"}]
DEEP = 100_000
# A number int() refuses to convert (over 4,300 digits).
HUGE_NUMBER = "9" * 5000


def chat_body(**fields: Any) -> bytes:
    return json.dumps({"messages": QUESTION, **fields}).encode()


def with_raw(field: str, raw: str) -> bytes:
    """A valid body with ``"field": raw`` appended as raw JSON text (json.dumps cannot write
    what the probe sent: deep nesting, huge numbers, lone surrogate escapes)."""
    return chat_body()[:-1] + f', "{field}": {raw}}}'.encode()


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# --------------------------------------------------------------------------- chat, in-process


@pytest.fixture
def local_index(tmp_path: Path) -> LocalImageIndex:
    """A real local index (LanceDB): filters go through odata.parse, to_sql and DataFusion."""
    index = LocalImageIndex(directory=tmp_path / "index", name="images-v")
    index.ensure(LITE)
    index.upsert([make_doc(i, model=LITE, source=f"c/{i % 2}.json") for i in range(4)])
    return index


def respond(raw: bytes, index: Any) -> tuple[int, dict[str, Any]]:
    response = endpoint.respond(raw, deps(index, FakeVectorizer(LITE)), default_index="images-v")
    assert isinstance(response.body, bytes)
    return response.status, json.loads(response.body)


def error_of(status: int, answer: dict[str, Any]) -> tuple[int, str | None, str | None]:
    error = answer["error"]
    # param is a string in the inference document: absent when no field is at fault.
    assert set(error) - {"param"} == {"message", "type", "code"}
    assert error["type"] == "invalid_request_error"
    return status, error.get("param"), error["code"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (with_raw("extra", nested(DEEP)), (400, None, "invalid_json")),
        (with_raw("seed", HUGE_NUMBER), (400, None, "invalid_json")),
        (with_raw("temperature", "NaN"), (400, None, "invalid_json")),
        (b'{"messages": "\xff"}', (400, None, "invalid_json")),
        (
            json.dumps(
                {"messages": [{"role": "user", "content": "x", "x": json.loads(nested(40))}]}
            ).encode(),
            (400, "messages[0].x" + "[0]" * 30, "invalid_value"),
        ),
        (
            b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\ud800"}]}]}',
            (400, "messages[0].content[0].text", "invalid_text"),
        ),
        (
            b'{"messages": [{"role": "user", "content": "\\udfff"}]}',
            (400, "messages[0].content", "invalid_text"),
        ),
        (
            b'{"messages": [{"role": "user", "content": "x", "\\ud800": 1}]}',
            (400, "messages[0]", "invalid_text"),
        ),
        (
            chat_body(data_sources=params(role_information="\ud800")),
            (400, f"{P}.role_information", "invalid_text"),
        ),
        (
            chat_body(messages=[user(text("x"))] * (request.MAX_MESSAGES + 1)),
            (400, "messages", "array_above_max_length"),
        ),
        (b" " * (request.MAX_BODY_BYTES + 1), (413, None, "request_too_large")),
    ],
    ids=[
        "nested-100000",
        "5000-digit-number",
        "nan",
        "not-utf8",
        "nested-past-the-cap-names-the-field",
        "surrogate-in-text-part",
        "surrogate-in-string-content",
        "surrogate-in-a-key",
        "surrogate-in-role-information",
        "too-many-messages",
        "body-over-50-mb",
    ],
)
def test_bad_chat_bodies_get_documented_errors(
    raw: bytes, expected: tuple[int, str | None, str], local_index: LocalImageIndex
) -> None:
    status, answer = respond(raw, local_index)
    assert error_of(status, answer) == expected


def test_what_the_caps_allow_is_answered(local_index: LocalImageIndex) -> None:
    emoji = '{"messages": [{"role": "user", "content": "a photo \\ud83d\\ude00"}]}'
    most = chat_body(messages=[user(text("a photo"))] * request.MAX_MESSAGES)
    deep_ok = {
        "role": "user",
        "content": "a photo",
        "x": json.loads(nested(request.MAX_JSON_DEPTH - 3)),
    }
    for raw in (emoji.encode(), most, json.dumps({"messages": [deep_ok]}).encode()):
        status, answer = respond(raw, local_index)
        assert status == 200, answer


FILTER = f"{P}.filter"


@pytest.mark.parametrize(
    "expression",
    [
        "(" * 3000,
        "not " * 3000,
        "(" * 3000 + "source eq 'x'" + ")" * 3000,
        "not " * (odata.MAX_NESTING + 1) + "source eq 'x'",
        "(" * (odata.MAX_NESTING + 1) + "source eq 'x'" + ")" * (odata.MAX_NESTING + 1),
        "source eq '" + "x" * odata.MAX_FILTER_CHARS + "'",
    ],
    ids=["open-3000", "not-3000", "balanced-3000", "not-past-cap", "parens-past-cap", "too-long"],
)
def test_hostile_filters_are_400s_naming_the_filter(
    expression: str, local_index: LocalImageIndex
) -> None:
    status, answer = respond(chat_body(data_sources=params(filter=expression)), local_index)
    assert error_of(status, answer) == (400, FILTER, "invalid_value")
    assert len(answer["error"]["message"]) < 600  # quotes the start of the filter only


def alternating(depth: int) -> str:
    """``id eq 'b0' or (id eq 'b1' and (...))``: each level one more parenthesis."""
    expression = "source eq 'c/1.json'"
    for i in range(depth):
        expression = f"id eq 'b{i}' {'and' if i % 2 else 'or'} ({expression})"
    return expression


def wide(limit: int) -> str:
    """As many ``not (...)`` terms joined by ``or`` as fit in ``limit`` characters."""
    terms: list[str] = []
    while len(" or ".join([*terms, f"not (id eq 'x{len(terms)}')"])) <= limit:
        terms.append(f"not (id eq 'x{len(terms)}')")
    return " or ".join(terms)


@pytest.mark.parametrize(
    ("expression", "ids"),
    [
        ("not " * odata.MAX_NESTING + "source eq 'c/1.json'", {"doc-0001", "doc-0003"}),
        (alternating(odata.MAX_NESTING), set()),
        (wide(odata.MAX_FILTER_CHARS), {"doc-0000", "doc-0001", "doc-0002", "doc-0003"}),
    ],
    ids=["not-at-cap", "alternating-at-cap", "widest"],
)
def test_filters_at_the_caps_run_on_the_local_index_quickly(
    expression: str, ids: set[str], local_index: LocalImageIndex
) -> None:
    """DataFusion's SQL parser refuses ~24 nested levels and takes exponential time on deeper
    ``NOT (`` chains: what the parser accepts must still run, fast."""
    odata.parse(expression, {"id", "source"})
    started = time.monotonic()
    found = local_index.text_search("photo", top=10, filter=expression)
    vector_found = local_index.vector_search(
        make_doc(0, model=LITE).image_vector, top=10, filter=expression
    )
    assert {h.id for h in found} == {h.id for h in vector_found} == ids
    assert time.monotonic() - started < 5


def test_filter_errors_quote_only_the_start_of_the_filter() -> None:
    with pytest.raises(InvalidFilterError) as caught:
        odata.parse("source eq " + "x " * 10_000, {"source"})
    assert len(str(caught.value)) < 400


# --------------------------------------------------------------------------- chat over HTTP


@pytest.fixture
def chat_host(devhost, azurite, tmp_path):
    container = f"hard{uuid.uuid4().hex[:10]}"
    data_dir = tmp_path / "data"
    settings = config.Settings.from_env(
        {
            "AzureWebJobsStorage": azurite.connection_string,
            "IMAGES_CONTAINER": container,
            "LOCAL_DATA_DIR": str(data_dir),
        }
    )
    config.blob_store(settings).ensure_container(container)
    index = config.image_index(settings, naming.index_name_for(container))
    index.ensure(config.vectorizer(settings).model)
    env = {
        "IMAGES_CONTAINER": container,
        "LOCAL_DATA_DIR": str(data_dir),
        "CHAT_DEFAULT_INDEX": None,
        "AZURE_OPENAI_ENDPOINT": None,
        "OPENAI_BASE_URL": None,
        "AZURE_VISION_ENDPOINT": None,
        "AZURE_SEARCH_ENDPOINT": None,
    }
    return devhost(REPO, env=env), naming.index_name_for(container)


def post(host, raw: bytes) -> tuple[int, dict[str, Any]]:
    response = requests.post(
        f"{host.base_url}/api/chat/completions",
        data=raw,
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert response.headers["Content-Type"].startswith("application/json"), response.text
    return response.status_code, response.json()


def test_the_probes_bodies_and_filters_get_openai_errors_over_http(chat_host) -> None:
    """The wiring, once per kind (the 413 over HTTP: test_hardening_http.py)."""
    host, index_name = chat_host

    def filtered(expression: str) -> bytes:
        parameters = {"index_name": index_name, "filter": expression}
        return chat_body(data_sources=[{"type": "azure_search", "parameters": parameters}])

    cases = [
        (with_raw("extra", nested(DEEP)), (400, None, "invalid_json")),
        (with_raw("seed", HUGE_NUMBER), (400, None, "invalid_json")),
        (
            b'{"messages": [{"role": "user", "content": "\\ud800"}]}',
            (400, "messages[0].content", "invalid_text"),
        ),
        (
            chat_body(messages=QUESTION * (request.MAX_MESSAGES + 1)),
            (400, "messages", "array_above_max_length"),
        ),
        (filtered("(" * 3000), (400, FILTER, "invalid_value")),
        (filtered("not " * 3000), (400, FILTER, "invalid_value")),
    ]
    for raw, expected in cases:
        status, answer = post(host, raw)
        assert error_of(status, answer) == expected, answer
    # The host is still answering, and nothing went to its log as a failure.
    status, answer = post(host, filtered("not (source eq 'x')"))
    assert status == 200, answer
    assert "chat request failed" not in host.log_text()
    assert "Traceback" not in host.log_text()


# --------------------------------------------------------------------------- metadata files


@pytest.fixture
def ingest_host(devhost, blob_service, unique_container, tmp_path) -> Driver:
    env = {
        "IMAGES_CONTAINER": unique_container,
        "WORK_CONTAINER": f"{unique_container}-work",
        "LOCAL_DATA_DIR": str(tmp_path / "data"),
    }
    host = devhost(REPO, env=env, state_dir=tmp_path / "state")
    return Driver(host, blob_service, unique_container, env["WORK_CONTAINER"], tmp_path / "data")


def assert_no_internals(text: str) -> None:
    for leak in ("Traceback", "/work/", ".py"):
        assert leak not in text


def test_unreadable_metadata_files_are_rejected_and_bad_values_fail_only_their_entry(
    ingest_host: Driver,
) -> None:
    app = ingest_host
    app.put_image("good.jpg", picture_bytes(1))
    too_long = "x" * (manifest.MAX_DESCRIPTION_CHARS + 1)
    entries = (
        '[{"image_blob_path": "good.jpg", "description": "fine"},'
        ' {"image_blob_path": "a.jpg", "description": "broken \\ud800 text"},'
        ' {"image_blob_path": "b\\ud800.jpg", "description": "a path that is not text"},'
        f' {{"image_blob_path": "c.jpg", "description": "{too_long}"}}]'
    )
    files = {
        "metadata-nested.json": "[" * DEEP,
        "metadata-number.json": (
            '[{"image_blob_path": "good.jpg", "description": "x", "extra": ' + HUGE_NUMBER + "}]"
        ),
        "metadata-values.json": entries,
    }
    for name, content in files.items():
        app.put_metadata(name, content.encode())
    app.wait_idle()

    record = app.latest()
    assert record["phase"] == "completed"
    errors = {f["metadata"].rsplit("/", 1)[-1]: f.get("error") for f in record["files"]}
    for name in ("metadata-nested.json", "metadata-number.json"):
        assert errors[name]["rule"] == "json"
        assert "not valid JSON" in errors[name]["message"]
    assert errors["metadata-values.json"] is None
    assert record["byStatus"]["indexed"] == 1
    status = requests.get(f"{app.host.base_url}/api/ingestions/{record['id']}", timeout=10)
    assert_no_internals(status.text)
    report = app.report(record["id"])
    rows = [
        (r["image_blob_path"], r["status"], r.get("code"))
        for r in report["results"]
        if r["metadata"].endswith("metadata-values.json")
    ]
    assert rows == [
        ("good.jpg", "indexed", None),
        ("a.jpg", "skipped", "invalid_text"),
        ("b\\ud800.jpg", "skipped", "invalid_text"),
        ("c.jpg", "skipped", "description_too_long"),
    ]
    listing = requests.get(f"{app.host.base_url}/api/ingestions", timeout=10)
    assert_no_internals(listing.text)
