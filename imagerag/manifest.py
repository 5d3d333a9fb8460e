"""Metadata files (``metadata*.json``): the name rule, parsing and validation. Pure: no I/O."""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MAX_ENTRIES = 10_000
# Blob names are at most 1,024 characters (Azure Storage limit).
MAX_BLOB_PATH_LENGTH = 1024
# About 1,000 tokens, the chunk size On Your Data indexes by default: a description is a
# caption, and chat sends up to 20 of them (top_n) to the model and back in citations.
MAX_DESCRIPTION_CHARS = 4000

# Control characters make blob names unusable in URLs and logs.
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
# json.loads keeps a lone surrogate escape ("\\ud800") as is, and UTF-8 cannot encode it: the
# entry could be neither indexed nor written to the report. Valid pairs are joined by json.loads.
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


class ManifestError(ValueError):
    """The file as a whole breaks a rule; nothing in it is ingested.

    ``rule`` is a stable code (``name``, ``encoding``, ``json``, ``shape``, ``too_many_entries``)
    and the message names the rule in words a user can act on.
    """

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    index: int  # 0-based position in the JSON array
    image_blob_path: str
    description: str


@dataclass(frozen=True, slots=True)
class EntryProblem:
    index: int
    image_blob_path: str | None  # None when the entry has no usable path
    # not_object | missing_field | wrong_type | invalid_text | invalid_path |
    # description_too_long | duplicate
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Manifest:
    count: int  # elements in the array, valid or not
    entries: tuple[ManifestEntry, ...]
    problems: tuple[EntryProblem, ...]


NAME_RULE = (
    "a metadata file sits at the top of its container (no folder), its name starts with "
    "lowercase 'metadata' and ends with lowercase '.json'"
)


def is_metadata_name(blob_path: str) -> bool:
    """The name rule: a top-level blob whose name starts with lowercase ``metadata`` and ends
    with ``.json``."""
    return "/" not in blob_path and blob_path.startswith("metadata") and blob_path.endswith(".json")


def near_miss_rule(blob_path: str) -> str | None:
    """For a name that looks meant as a metadata file but breaks the name rule (case, a
    folder, ``.JSON``, ``meta-data``), what to change; None for every other name."""
    if is_metadata_name(blob_path):
        return None
    name = posixpath.basename(blob_path)
    squashed = name.lower().replace("-", "").replace("_", "").replace(" ", "")
    if not (squashed.startswith("metadata") and ".json" in name.lower()):
        return None
    if "/" in blob_path:
        return f"{NAME_RULE}: move it out of the folder {posixpath.dirname(blob_path)!r}"
    if not name.startswith("metadata"):
        return f"{NAME_RULE}: rename it so that it starts with 'metadata'"
    return f"{NAME_RULE}: rename it so that it ends with '.json'"


def check_metadata_name(blob_path: str) -> None:
    if not is_metadata_name(blob_path):
        raise ManifestError("name", f"{blob_path!r} is not a metadata file: {NAME_RULE}")


def parse_manifest(data: bytes, *, blob_path: str | None = None) -> Manifest:
    """Parse and validate a metadata file.

    File-level rule violations raise ManifestError; per-entry problems are collected so that
    one bad line does not reject thousands of good ones. Duplicate ``image_blob_path`` values:
    the last entry wins, the earlier ones are reported as ``duplicate`` problems.
    """
    if blob_path is not None:
        check_metadata_name(blob_path)
    try:
        # utf-8-sig: editors on Windows often save JSON with a byte-order mark.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(
            "encoding", f"metadata file must be UTF-8 encoded JSON (bad byte at {exc.start})"
        ) from None
    document = _json_document(text)
    if not isinstance(document, list):
        raise ManifestError(
            "shape",
            "metadata file must be a JSON array of objects with 'image_blob_path' and "
            f"'description', not a JSON {_json_type(document)}",
        )
    if len(document) > MAX_ENTRIES:
        raise ManifestError(
            "too_many_entries",
            f"metadata file may list at most {MAX_ENTRIES:,} entries; it lists "
            f"{len(document):,}: split it into several metadata*.json files",
        )

    valid: dict[str, ManifestEntry] = {}  # insertion order = first-seen order
    problems: list[EntryProblem] = []
    for index, item in enumerate(document):
        entry_or_problem = _parse_entry(index, item)
        if isinstance(entry_or_problem, EntryProblem):
            problems.append(entry_or_problem)
            continue
        previous = valid.pop(entry_or_problem.image_blob_path, None)
        if previous is not None:
            problems.append(
                EntryProblem(
                    index=previous.index,
                    image_blob_path=previous.image_blob_path,
                    code="duplicate",
                    message=f"image_blob_path listed again at index {index}; the last entry wins",
                )
            )
        valid[entry_or_problem.image_blob_path] = entry_or_problem

    return Manifest(
        count=len(document),
        entries=tuple(sorted(valid.values(), key=lambda e: e.index)),
        problems=tuple(sorted(problems, key=lambda p: p.index)),
    )


def _json_document(text: str) -> Any:
    """The file's JSON; what the parser cannot read rejects the file (rule ``json``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        reason = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    except RecursionError:
        reason = "it is nested too deeply (a metadata file is an array of flat objects)"
    except ValueError:
        # int() refuses over 4,300 digits (a guard against quadratic conversion).
        reason = "a number has more than 4,300 digits (write long values as strings)"
    raise ManifestError("json", f"metadata file is not valid JSON: {reason}")


def _parse_entry(index: int, item: Any) -> ManifestEntry | EntryProblem:
    if not isinstance(item, dict):
        return EntryProblem(
            index, None, "not_object", f"entry must be a JSON object, not a {_json_type(item)}"
        )
    raw_path = item.get("image_blob_path")
    # The path as reports show it: they are UTF-8 JSON, which a lone surrogate would break.
    shown = _printable(raw_path) if isinstance(raw_path, str) else None
    for field_name in ("image_blob_path", "description"):
        if field_name not in item:
            return EntryProblem(index, shown, "missing_field", f"'{field_name}' is required")
        value = item[field_name]
        if not isinstance(value, str):
            return EntryProblem(
                index,
                shown,
                "wrong_type",
                f"'{field_name}' must be a string, not a {_json_type(value)}",
            )
        if _LONE_SURROGATE.search(value):
            return EntryProblem(
                index,
                shown,
                "invalid_text",
                f"'{field_name}' contains a lone UTF-16 surrogate escape (such as \\ud800), "
                "which is not text: fix the escape or remove it",
            )
    path: str = item["image_blob_path"]
    description: str = item["description"]
    reason = blob_path_problem(path)
    if reason is not None:
        return EntryProblem(index, path or None, "invalid_path", reason)
    if len(description) > MAX_DESCRIPTION_CHARS:
        return EntryProblem(
            index,
            path,
            "description_too_long",
            f"'description' is {len(description):,} characters long; at most "
            f"{MAX_DESCRIPTION_CHARS:,} are allowed",
        )
    return ManifestEntry(index=index, image_blob_path=path, description=description)


def _printable(text: str) -> str:
    """``text`` with lone surrogates written as ``\\udXXX`` escapes, so reports can hold it."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def blob_path_problem(path: str) -> str | None:
    """Why ``path`` cannot name a blob inside a container, or None if it can. Never raises."""
    if not path.strip():
        return "'image_blob_path' must not be empty"
    if len(path) > MAX_BLOB_PATH_LENGTH:
        return f"'image_blob_path' is longer than {MAX_BLOB_PATH_LENGTH} characters"
    if "://" in path:
        return "'image_blob_path' must be a path inside the container, not a URL"
    if path.startswith("/"):
        return "'image_blob_path' must be relative to the container (no leading '/')"
    if path.endswith("/"):
        return "'image_blob_path' names a folder, not a blob"
    if "\\" in path:
        return "'image_blob_path' must use '/' between folders, not '\\'"
    if any(segment in (".", "..") for segment in path.split("/")):
        # Clients and proxies normalise these away, so the blob read would not be the one named.
        return "'image_blob_path' must not contain '.' or '..' segments"
    if _CONTROL_CHARS.search(path):
        return "'image_blob_path' contains control characters"
    if _LONE_SURROGATE.search(path):
        # Blob names travel as UTF-8 in URLs; a lone surrogate has no UTF-8 form.
        return "'image_blob_path' contains a lone UTF-16 surrogate, which is not text"
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def partitions(count: int, size: int) -> list[tuple[int, int]]:
    """Half-open ``(start, end)`` ranges covering ``range(count)`` in chunks of ``size``."""
    if count < 0:
        raise ValueError("count must be >= 0")
    if size < 1:
        raise ValueError("size must be >= 1")
    return [(start, min(start + size, count)) for start in range(0, count, size)]


def chunk(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[start:end] for start, end in partitions(len(items), size)]
