"""imagerag.manifest: the metadata file rules and partitioning."""

from __future__ import annotations

import json

import pytest

from imagerag import manifest
from imagerag.manifest import ManifestError, parse_manifest


def entries(n: int) -> list[dict[str, str]]:
    return [{"image_blob_path": f"img/{i}.png", "description": f"image {i}"} for i in range(n)]


def encode(value: object) -> bytes:
    return json.dumps(value).encode()


# --------------------------------------------------------------------------- name rule


@pytest.mark.parametrize(
    "path",
    ["metadata.json", "metadata-2024.json", "metadata_products.json"],
)
def test_metadata_names_accepted(path: str) -> None:
    assert manifest.is_metadata_name(path)
    manifest.check_metadata_name(path)


@pytest.mark.parametrize(
    "path",
    [
        "Metadata.json",  # lowercase only
        "METADATA.json",
        "my-metadata.json",  # must start with it
        "metadata.JSON",  # must end with .json
        "metadata.json.bak",
        "metadata.txt",
        "metadata-old/photo.json",  # the rule applies to the file name, not the folder
        "sub/dir/metadata1.json",  # only top-level files are metadata files
    ],
)
def test_metadata_names_rejected(path: str) -> None:
    assert not manifest.is_metadata_name(path)
    with pytest.raises(
        ManifestError, match="starts with lowercase 'metadata' and ends with lowercase '.json'"
    ) as info:
        parse_manifest(encode(entries(1)), blob_path=path)
    assert info.value.rule == "name"


# --------------------------------------------------------------------------- file shape


def test_valid_file_parses_in_order() -> None:
    result = parse_manifest(encode(entries(3)), blob_path="metadata.json")
    assert result.count == 3
    assert result.problems == ()
    assert [(e.index, e.image_blob_path, e.description) for e in result.entries] == [
        (0, "img/0.png", "image 0"),
        (1, "img/1.png", "image 1"),
        (2, "img/2.png", "image 2"),
    ]


def test_empty_array_is_valid() -> None:
    result = parse_manifest(b"[]")
    assert (result.count, result.entries, result.problems) == (0, (), ())


def test_utf8_bom_and_unicode_descriptions() -> None:
    data = "\ufeff" + json.dumps([{"image_blob_path": "é/ü.png", "description": "café ☕"}])
    result = parse_manifest(data.encode("utf-8"))
    assert result.entries[0].image_blob_path == "é/ü.png"
    assert result.entries[0].description == "café ☕"


def test_extra_fields_are_ignored() -> None:
    data = encode([{"image_blob_path": "a.png", "description": "a", "title": "x"}])
    assert parse_manifest(data).entries[0].image_blob_path == "a.png"


@pytest.mark.parametrize(
    ("data", "rule", "words"),
    [
        (b"not json", "json", "not valid JSON"),
        (b"[{]", "json", "not valid JSON"),
        (b"", "json", "not valid JSON"),
        (b"\xff\xfe[]", "encoding", "UTF-8"),
        (encode({"image_blob_path": "a.png", "description": "a"}), "shape", "JSON array"),
        (encode("metadata"), "shape", "JSON array"),
        (b"null", "shape", "not a JSON null"),
        # What the JSON parser cannot read rejects the file, with a reason a user can act on.
        (b"[" * 100_000, "json", "nested too deeply"),
        (b'[{"image_blob_path": "a.png", "n": ' + b"9" * 5000 + b"}]", "json", "4,300 digits"),
    ],
)
def test_file_level_errors_name_the_rule(data: bytes, rule: str, words: str) -> None:
    with pytest.raises(ManifestError, match=words) as info:
        parse_manifest(data)
    assert info.value.rule == rule
    assert str(info.value) == info.value.message


def test_ten_thousand_entries_accepted() -> None:
    result = parse_manifest(encode(entries(manifest.MAX_ENTRIES)))
    assert manifest.MAX_ENTRIES == 10_000
    assert result.count == 10_000
    assert len(result.entries) == 10_000
    assert result.problems == ()


def test_ten_thousand_and_one_entries_rejected() -> None:
    with pytest.raises(ManifestError, match="at most 10,000 entries; it lists 10,001") as info:
        parse_manifest(encode(entries(manifest.MAX_ENTRIES + 1)))
    assert info.value.rule == "too_many_entries"


# --------------------------------------------------------------------------- entries


@pytest.mark.parametrize(
    ("item", "code", "path", "words"),
    [
        ("a.png", "not_object", None, "must be a JSON object, not a string"),
        (["a.png", "x"], "not_object", None, "not a array"),
        (None, "not_object", None, "not a null"),
        ({"description": "x"}, "missing_field", None, "'image_blob_path' is required"),
        ({"image_blob_path": "a.png"}, "missing_field", "a.png", "'description' is required"),
        ({"image_blob_path": 5, "description": "x"}, "wrong_type", None, "must be a string"),
        ({"image_blob_path": None, "description": "x"}, "wrong_type", None, "not a null"),
        ({"image_blob_path": "a.png", "description": 3}, "wrong_type", "a.png", "not a number"),
        ({"image_blob_path": "a.png", "description": ["x"]}, "wrong_type", "a.png", "array"),
        ({"image_blob_path": "", "description": "x"}, "invalid_path", None, "empty"),
        ({"image_blob_path": "   ", "description": "x"}, "invalid_path", "   ", "empty"),
        ({"image_blob_path": "/a.png", "description": "x"}, "invalid_path", "/a.png", "relative"),
        ({"image_blob_path": "dir/", "description": "x"}, "invalid_path", "dir/", "folder"),
        (
            {"image_blob_path": "https://x.blob.core.windows.net/c/a.png", "description": "x"},
            "invalid_path",
            "https://x.blob.core.windows.net/c/a.png",
            "not a URL",
        ),
        ({"image_blob_path": "a\n.png", "description": "x"}, "invalid_path", "a\n.png", "control"),
        ({"image_blob_path": "a" * 1025, "description": "x"}, "invalid_path", "a" * 1025, "1024"),
        ({"image_blob_path": "../x/a.png", "description": "x"}, "invalid_path", "../x/a.png", ".."),
        ({"image_blob_path": "d/../a.png", "description": "x"}, "invalid_path", "d/../a.png", ".."),
        ({"image_blob_path": "./a.png", "description": "x"}, "invalid_path", "./a.png", "'.'"),
        ({"image_blob_path": "d\\a.png", "description": "x"}, "invalid_path", "d\\a.png", "'/'"),
        (
            {"image_blob_path": "//evil.example/c/a.png", "description": "x"},
            "invalid_path",
            "//evil.example/c/a.png",
            "relative",
        ),
        # A lone surrogate cannot be written as UTF-8: the report shows it escaped.
        ({"image_blob_path": "a.png", "description": "\ud800"}, "invalid_text", "a.png", "\\ud800"),
        (
            {"image_blob_path": "a\udfff.png", "description": "x"},
            "invalid_text",
            "a\\udfff.png",
            "surrogate",
        ),
        (
            {"image_blob_path": "a.png", "description": "x" * (manifest.MAX_DESCRIPTION_CHARS + 1)},
            "description_too_long",
            "a.png",
            "at most 4,000",
        ),
    ],
)
def test_entry_problems_are_reported_not_raised(
    item: object, code: str, path: str | None, words: str
) -> None:
    data = encode([{"image_blob_path": "ok.png", "description": "fine"}, item])
    result = parse_manifest(data)
    assert result.count == 2
    assert [e.image_blob_path for e in result.entries] == ["ok.png"]
    (problem,) = result.problems
    assert (problem.index, problem.code, problem.image_blob_path) == (1, code, path)
    assert words in problem.message


def test_dots_inside_names_are_fine() -> None:
    result = parse_manifest(encode([{"image_blob_path": "a..b/c.d.png", "description": ""}]))
    assert [e.image_blob_path for e in result.entries] == ["a..b/c.d.png"]


def test_a_description_at_the_cap_is_allowed() -> None:
    description = "x" * manifest.MAX_DESCRIPTION_CHARS
    result = parse_manifest(encode([{"image_blob_path": "a.png", "description": description}]))
    assert result.entries[0].description == description


def test_blob_path_problem_is_the_entry_rule() -> None:
    assert manifest.blob_path_problem("cats/tabby.jpg") is None
    assert manifest.blob_path_problem("../x.jpg") == (
        "'image_blob_path' must not contain '.' or '..' segments"
    )
    assert "surrogate" in (manifest.blob_path_problem("a\ud800.jpg") or "")


def test_empty_description_is_allowed() -> None:
    result = parse_manifest(encode([{"image_blob_path": "a.png", "description": ""}]))
    assert result.entries[0].description == ""
    assert result.problems == ()


def test_duplicate_paths_keep_the_last_and_report_the_earlier() -> None:
    data = encode(
        [
            {"image_blob_path": "a.png", "description": "first"},
            {"image_blob_path": "b.png", "description": "b"},
            {"image_blob_path": "a.png", "description": "second"},
            {"image_blob_path": "a.png", "description": "third"},
        ]
    )
    result = parse_manifest(data)
    assert result.count == 4
    assert [(e.index, e.image_blob_path, e.description) for e in result.entries] == [
        (1, "b.png", "b"),
        (3, "a.png", "third"),
    ]
    assert [(p.index, p.code, p.image_blob_path) for p in result.problems] == [
        (0, "duplicate", "a.png"),
        (2, "duplicate", "a.png"),
    ]
    assert "index 2" in result.problems[0].message
    assert "index 3" in result.problems[1].message


# --------------------------------------------------------------------------- partitions


@pytest.mark.parametrize(
    ("count", "size", "expected"),
    [
        (0, 100, []),
        (1, 100, [(0, 1)]),
        (100, 100, [(0, 100)]),
        (101, 100, [(0, 100), (100, 101)]),
        (250, 100, [(0, 100), (100, 200), (200, 250)]),
        (3, 1, [(0, 1), (1, 2), (2, 3)]),
    ],
)
def test_partitions(count: int, size: int, expected: list[tuple[int, int]]) -> None:
    assert manifest.partitions(count, size) == expected


def test_partitions_cover_the_largest_file_exactly_once() -> None:
    parts = manifest.partitions(10_000, 100)
    assert len(parts) == 100
    covered = [i for start, end in parts for i in range(start, end)]
    assert covered == list(range(10_000))


@pytest.mark.parametrize(("count", "size"), [(-1, 100), (10, 0), (10, -5)])
def test_partitions_reject_bad_arguments(count: int, size: int) -> None:
    with pytest.raises(ValueError):
        manifest.partitions(count, size)
