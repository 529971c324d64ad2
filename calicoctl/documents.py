"""Reading resource documents from files or stdin: multi-document YAML or JSON, Lists expanded."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import yaml


class DocumentError(ValueError):
    """The input could not be read as resource documents; the message says where."""


def read_source(path: str) -> tuple[str, str]:
    """The text of FILE, or of stdin for '-'; returns (text, display name)."""
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(), path
    except OSError as e:
        raise DocumentError(f"cannot read {path}: {e.strerror}") from e


def parse_documents(text: str, source: str) -> list[dict[str, Any]]:
    """Every object in the text, in order; `kind: List` / `kind: XList` documents expanded."""
    try:
        raw = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        where = ""
        mark = getattr(e, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(e, "problem", None) or str(e)
        raise DocumentError(f"{source}: malformed YAML/JSON{where}: {problem}") from e
    objects: list[dict[str, Any]] = []
    for index, doc in enumerate(raw):
        if doc is None:
            continue
        objects.extend(_expand(doc, source, index))
    if not objects:
        raise DocumentError(f"{source}: no resources found")
    return objects


def _expand(doc: object, source: str, index: int) -> Iterator[dict[str, Any]]:
    if not isinstance(doc, dict):
        raise DocumentError(
            f"{source}: document {index + 1} is a {type(doc).__name__}, expected an object "
            "with apiVersion, kind and metadata"
        )
    kind = doc.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and "items" in doc:
        items = doc["items"]
        if not isinstance(items, list):
            raise DocumentError(f"{source}: document {index + 1}: items must be a list")
        for item in items:
            yield from _expand(item, source, index)
        return
    for field in ("apiVersion", "kind"):
        if not isinstance(doc.get(field), str) or not doc.get(field):
            raise DocumentError(f"{source}: document {index + 1}: {field} is missing")
    yield doc


def dump_json(obj: object) -> str:
    return json.dumps(obj, indent=2, sort_keys=False)


def dump_yaml(obj: object) -> str:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)
