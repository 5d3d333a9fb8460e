"""imagerag.naming: index names, document ids and Durable instance ids."""

from __future__ import annotations

import re

import pytest

from imagerag import naming

SEARCH_KEY = re.compile(r"^[A-Za-z0-9_\-=]{1,1024}$")
SHA = "ab" * 32


def test_index_name_of_a_container() -> None:
    assert naming.index_name_for("images") == "images-v"


def test_partition_instance_ids_share_the_parent_prefix() -> None:
    parent = naming.run_id("images", 3)
    child = naming.partition_instance_id(parent, 7)
    assert child == f"{parent}-p0007"
    assert child.startswith(naming.partition_id_prefix(parent))
    assert not naming.is_ingestion_instance_id(child)


def test_document_id_is_deterministic_and_a_valid_search_key() -> None:
    a = naming.document_id("images", "cats/tabby 1.jpg")
    assert a == naming.document_id("images", "cats/tabby 1.jpg")
    assert SEARCH_KEY.match(a)
    assert a == a.lower() and len(a) == 64


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (("images", "a.png"), ("images", "b.png")),
        (("images", "a.png"), ("other", "a.png")),
        (("images", "A.png"), ("images", "a.png")),  # blob names are case-sensitive
        (("images", "x/a.png"), ("images-x", "a.png")),
    ],
)
def test_document_ids_differ(left: tuple[str, str], right: tuple[str, str]) -> None:
    assert naming.document_id(*left) != naming.document_id(*right)


@pytest.mark.parametrize("path", ["ü/ß.png", "a b/c?d#e.png", "a\\b.png", "=+/.png", "x" * 1024])
def test_document_id_of_unusual_paths_is_still_a_valid_key(path: str) -> None:
    assert SEARCH_KEY.match(naming.document_id("images", path))


def test_run_ids_name_the_container_and_the_run() -> None:
    first = naming.run_id("images", 1)
    assert re.fullmatch(naming.INSTANCE_ID_PATTERN, first)
    assert naming.is_ingestion_instance_id(first)
    assert not any(c in first for c in "/\\#?")
    assert first == naming.run_id("images", 1)
    assert first != naming.run_id("images", 2) != naming.run_id("photos", 2)
    assert first.rsplit("-", 1)[0] == naming.run_id("images", 99).rsplit("-", 1)[0]


def test_each_container_has_one_sync_instance_and_notices_of_its_own() -> None:
    assert naming.sync_instance_id("images") == naming.sync_instance_id("images")
    assert naming.sync_instance_id("images") != naming.sync_instance_id("photos")
    notice = naming.notice_id("images", "Metadata.json")
    assert naming.is_notice_id(notice) and not naming.is_ingestion_instance_id(notice)
    assert notice != naming.notice_id("images", "metadata.JSON")


@pytest.mark.parametrize(
    "value",
    [
        "ingest-" + "0" * 16 + "-" + "0" * 7,
        "ingest-" + "A" * 16 + "-" + "0" * 8,
        "Ingest-" + "0" * 16 + "-" + "0" * 8,
        "ingest-" + "0" * 24,
        "ingest-" + "0" * 16 + "-" + "0" * 8 + "-p0000",
        "ingest-" + "0" * 16 + "-" + "0" * 16,
    ],
)
def test_malformed_instance_ids(value: str) -> None:
    assert not naming.is_ingestion_instance_id(value)
