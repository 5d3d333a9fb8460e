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
    parent = naming.ingestion_instance_id("images", "metadata.json", SHA)
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


def test_ingestion_instance_id_format_and_determinism() -> None:
    a = naming.ingestion_instance_id("images", "metadata.json", SHA)
    assert re.fullmatch(naming.INSTANCE_ID_PATTERN, a)
    assert naming.is_ingestion_instance_id(a)
    assert not any(c in a for c in "/\\#?")
    assert a == naming.ingestion_instance_id("images", "metadata.json", SHA)


def test_ingestion_instance_id_changes_with_content_and_location() -> None:
    base = naming.ingestion_instance_id("images", "metadata.json", SHA)
    assert base.startswith(naming.ingestion_id_prefix("images", "metadata.json"))
    assert naming.ingestion_instance_id("images", "metadata.json", "cd" * 32).startswith(
        naming.ingestion_id_prefix("images", "metadata.json")
    )
    assert base != naming.ingestion_instance_id("images", "metadata.json", "cd" * 32)
    assert base != naming.ingestion_instance_id("images", "metadata2.json", SHA)
    assert base != naming.ingestion_instance_id("photos", "metadata.json", SHA)


@pytest.mark.parametrize("bad", ["", "ab", "AB" * 32, "zz" * 32, SHA + "0"])
def test_ingestion_instance_id_requires_a_sha256_hex(bad: str) -> None:
    with pytest.raises(ValueError, match="64 lowercase hex"):
        naming.ingestion_instance_id("images", "metadata.json", bad)


@pytest.mark.parametrize(
    "value",
    [
        "ingest-" + "0" * 16 + "-" + "0" * 15,
        "ingest-" + "A" * 16 + "-" + "0" * 16,
        "Ingest-" + "0" * 16 + "-" + "0" * 16,
        "ingest-" + "0" * 32,
        "ingest-" + "0" * 16 + "-" + "0" * 16 + "-p0000",
    ],
)
def test_malformed_instance_ids(value: str) -> None:
    assert not naming.is_ingestion_instance_id(value)
