"""Hostile requests, sent over HTTP to devhost as the probes did: one request must never take
the app down, and no path may leave the images container."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlsplit

import pytest
import requests
from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas
from chat_seed import Seeded, path_of, seed_chat_index
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sample_images import altered_copy

from imagerag import naming

AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


@pytest.fixture(scope="module")
def seeded(azurite, tmp_path_factory) -> Seeded:
    return seed_chat_index(azurite.connection_string, tmp_path_factory.mktemp("hardening"))


def sas_connection_string(azurite) -> str:
    """An account SAS connection string: the case where '..' in a path once left the
    container (the HTTP client collapses it on the wire, and the SAS signs no path)."""
    sas = generate_account_sas(
        "devstoreaccount1",
        AZURITE_KEY,
        resource_types=ResourceTypes(service=True, container=True, object=True),
        permission=AccountSasPermissions(read=True, write=True, list=True, create=True),
        expiry=datetime.now(UTC) + timedelta(hours=2),
    )
    return f"BlobEndpoint={azurite.blob_endpoint};SharedAccessSignature={sas}"


@pytest.fixture(scope="module")
def host(devhost_module, azurite, seeded, repo_root):
    # One devhost for the module: the fuzz test sends many requests to the same process.
    env = {**seeded.env(), "AzureWebJobsStorage": sas_connection_string(azurite)}
    return devhost_module(repo_root, env=env)


def chat(host, body: object, **kwargs) -> requests.Response:
    return requests.post(f"{host.base_url}/api/chat/completions", json=body, timeout=120, **kwargs)


def question(text: str, image: str | None = None) -> dict:
    content: list[dict] = [{"type": "text", "text": text}]
    if image is not None:
        content.append({"type": "image_url", "image_url": {"url": image}})
    return {"messages": [{"role": "user", "content": content}]}


def image_of(seeded: Seeded, seed: int) -> str:
    data = altered_copy(seeded.originals[seed])
    return "data:image/jpeg;base64," + base64.b64encode(data).decode()


def citations(response: requests.Response) -> list[dict]:
    assert response.status_code == 200, response.text[:500]
    return response.json()["choices"][0]["message"]["context"]["citations"]


# --------------------------------------------------------------------------- query cost


def test_a_25_mb_question_is_answered_and_the_host_keeps_serving(host, seeded):
    # 3.6 million words: the full-text engine once tried to allocate 59 GB for this and the
    # process aborted. Only the first words of the turn are searched now.
    huge = chat(host, {"messages": [{"role": "user", "content": "lighthouse " * 3_600_000}]})
    assert huge.status_code == 200
    intent = json.loads(huge.json()["choices"][0]["message"]["context"]["intent"])
    assert len(intent[0].split()) <= 64
    assert citations(huge)[0]["filepath"] == path_of(1)
    normal = chat(host, question("a red bicycle"))
    assert citations(normal)[0]["filepath"] == path_of(0)


def test_bodies_over_the_limits_get_openai_shaped_413s(host):
    over_app_limit = b'{"messages": [{"role": "user", "content": "' + b"a" * (51 << 20) + b'"}]}'
    response = requests.post(
        f"{host.base_url}/api/chat/completions",
        data=over_app_limit,
        headers={"Content-Type": "application/json"},
        timeout=120,
    )
    assert response.status_code == 413
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"]["code"] == "request_too_large"

    over_host_limit = b"x" * (101 << 20)
    response = requests.post(
        f"{host.base_url}/api/chat/completions", data=over_host_limit, timeout=120
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


# --------------------------------------------------------------------------- image route


def test_citation_links_open_the_image_and_carry_no_function_key(host, seeded):
    url = f"{host.base_url}/api/chat/completions?code=caller-secret-key"
    response = requests.post(url, json=question("what is this?", image_of(seeded, 2)), timeout=60)
    link = citations(response)[0]["url"]
    assert "caller-secret-key" not in link and "code=" not in link
    assert "sig=" in link and "exp=" in link
    image = requests.get(link, timeout=30)
    assert image.status_code == 200
    assert image.headers["Content-Type"] == "image/jpeg"  # found from the bytes
    assert image.content == seeded.originals[2]


def test_the_image_route_serves_nothing_outside_cited_images(host, seeded, blob_service):
    link = citations(chat(host, question("what is this?", image_of(seeded, 3))))[0]["url"]
    parts = urlsplit(link)
    query = parts.query
    base = f"{host.base_url}/api/images"
    container = seeded.container
    # Planted elsewhere: another container, and a JSON file next to the images (in their
    # folder: a top-level metadata file would start a run that empties this hand-seeded index).
    blob_service.create_container(f"{container}-work")
    blob_service.get_container_client(f"{container}-work").upload_blob(
        "azure-webjobs-secrets/host.json", b'{"masterKey": "planted"}', overwrite=True
    )
    blob_service.get_container_client(container).upload_blob(
        "pictures/metadata-huge.json", b"[]", overwrite=True
    )
    attempts = [
        f"{base}/{container}/..%2F{container}-work/azure-webjobs-secrets/host.json?{query}",
        f"{base}/{container}/pictures/..%2F..%2F{container}-work/azure-webjobs-secrets/host.json",
        f"{base}/{container}/%2e%2e/{container}-work/azure-webjobs-secrets/host.json?{query}",
        f"{base}/{container}/pictures/%2E/3.jpg?{query}",
        f"{base}/{container}/pictures/metadata-huge.json",
        f"{base}/{container}/{path_of(4)}",  # an indexed image, but no link was signed for it
        f"{base}/{container}/{path_of(3)}?{query.replace('sig=', 'sig=x')}",  # tampered
        f"{base}/{container}-work/{quote('azure-webjobs-secrets/host.json')}?{query}",
    ]
    for url in attempts:
        refused = requests.get(url, timeout=30)
        assert refused.status_code == 404, url
        assert refused.json()["error"]["code"] == "not_found"
        assert b"planted" not in refused.content


def test_a_signed_link_to_an_image_no_index_cites_is_refused(host, seeded, blob_service):
    # Even a valid signature opens only what the container's index references.
    container = seeded.container
    blob_service.get_container_client(container).upload_blob(
        "loose/photo.jpg", seeded.originals[0], overwrite=True
    )
    link = citations(chat(host, question("what is this?", image_of(seeded, 0))))[0]["url"]
    forged_path = link.replace(quote(path_of(0)), quote("loose/photo.jpg"))
    assert requests.get(forged_path, timeout=30).status_code == 404


# --------------------------------------------------------------------------- management API


def test_the_management_api_cannot_start_an_ingestion_of_another_container(
    host, blob_service, wait_for
):
    other = "notconfigured"
    try:
        blob_service.create_container(other)
    except Exception:  # created by an earlier run of this module
        pass
    blob_service.get_container_client(other).upload_blob(
        "metadata.json", b'[{"image_blob_path": "a.jpg", "description": "x"}]', overwrite=True
    )
    instance = naming.run_id(other, 1)
    run = {"id": instance, "number": 1, "requested": 1, "changes": 1}
    payload = {"container": other, "index": f"{other}-v", "run": run}
    started = requests.post(
        f"{host.base_url}/runtime/webhooks/durabletask/orchestrators/ingest_run/{instance}",
        json=payload,
        timeout=30,
    )
    assert started.status_code == 202

    def finished() -> dict | None:
        record = requests.get(f"{host.base_url}/api/ingestions/{instance}", timeout=30)
        return record.json() if record.ok and record.json()["phase"] == "rejected" else None

    record = wait_for(finished, timeout=60)
    assert record["error"]["code"] == "ContainerNotAllowed"


# --------------------------------------------------------------------------- fuzz


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)
FIELDS = ["messages", "data_sources", "stream", "model", "temperature", "n"]
PARTS = st.sampled_from(
    [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}},
        {"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest"}},
        {"type": "image_url", "image_url": {"url": "data:text/plain;base64,aGk="}},
    ]
)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", "x"])},
    optional={"content": st.one_of(st.text(max_size=50), st.lists(PARTS | JSON, max_size=3))},
)
BODY = (
    st.fixed_dictionaries(
        {},
        optional={
            "messages": st.lists(MESSAGE, max_size=4) | JSON,
            "data_sources": st.lists(
                st.fixed_dictionaries(
                    {"type": st.sampled_from(["azure_search", "other"])},
                    optional={
                        "parameters": st.fixed_dictionaries(
                            {},
                            optional={
                                "index_name": st.sampled_from(["images-v", "Bad Name", "x" * 200]),
                                "filter": st.text(max_size=40) | st.just("(" * 300),
                                "top_n_documents": JSON,
                                "strictness": JSON,
                                "fields_mapping": JSON,
                            },
                        )
                    },
                ),
                max_size=2,
            ),
            "stream": JSON,
            "model": JSON,
        },
    )
    | JSON
)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=BODY)
def test_fuzzed_chat_bodies_get_an_answer_or_a_documented_error(host, body):
    # json.dumps writes NaN and Infinity as bare words, which some parsers accept: sent too.
    response = requests.post(
        f"{host.base_url}/api/chat/completions",
        data=json.dumps(body),
        headers={"Content-Type": "application/json"},
        timeout=120,
    )
    assert response.status_code in (200, 400, 404, 409, 413), response.text[:300]
    payload = response.json()
    if response.status_code != 200:
        error = payload["error"]
        assert isinstance(error["message"], str) and error["message"]
        assert "Traceback" not in response.text
