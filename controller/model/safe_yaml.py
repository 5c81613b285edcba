"""Loading YAML that a stranger may have written.

Manifests arrive through pull requests, so the loader is hostile-input code:
the pure-Python ``SafeLoader`` (the C loader can crash on deep nesting), a cap
on size and nesting, and no YAML feature that makes one document mean more
than it shows — anchors, aliases, merge keys, custom tags, duplicate keys,
several documents.  Every refusal is a ``Refused`` with one sentence, and so
is a value the reader cannot build (``2024-02-30``, an integer of 5,000
digits): never a traceback, which a pass would take for a bug and retry.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Any

import yaml
from yaml.events import AliasEvent, CollectionStartEvent, NodeEvent, ScalarEvent
from yaml.nodes import MappingNode, Node

from controller.errors import Refused

MAX_DEPTH = 32
_EXCERPT = 24

# What a plain scalar of each tag was meant to be, for the sentence that refuses it.
_KINDS = {
    "tag:yaml.org,2002:int": "a number",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:timestamp": "a date",
    "tag:yaml.org,2002:bool": "a boolean",
}

# Tags a plain document can carry; anything else (``!!python/...``, ``!custom``) is refused.
_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")
)


class Located(dict[str, Any]):
    """A mapping as read from YAML that remembers each key's line, so an error can point at it."""

    lines: dict[str, int]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lines = {}


def line_of(document: object, path: Sequence[object]) -> int | None:
    """The line (from 1) of the deepest key of ``path`` that the document has, or ``None``.

    ``path`` is a location as a validator gives it (``("source", "interval")``, list indexes
    included); a mapping not read from YAML knows no lines.
    """
    line = None
    node = document
    for part in path:
        if isinstance(node, Located) and isinstance(part, str) and part in node:
            line, node = node.lines.get(part, line), node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            break
    return line


def did_you_mean(word: str, allowed: Iterable[str]) -> str:
    """``", did you mean 'image'?"`` for the allowed key closest to a misspelt one, else ``""``."""
    close = difflib.get_close_matches(word, list(allowed), n=1, cutoff=0.6)
    return f", did you mean '{close[0]}'?" if close else ""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases, anchors, custom tags, merge keys, duplicates and depth."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, AliasEvent):
            raise Refused(f"YAML aliases are refused ({_where(event)}): write values out in full")
        if isinstance(event, NodeEvent) and event.anchor is not None:
            raise Refused(f"YAML anchors are refused ({_where(event)}): write values out in full")
        if isinstance(event, ScalarEvent | CollectionStartEvent):
            _check_tag(event)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise Refused(f"YAML nesting deeper than {MAX_DEPTH} levels is refused ({_where(event)})")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError, TypeError):
            raise Refused(_unbuildable(node)) from None

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise Refused(f"YAML merge keys '<<' are refused ({_where(key_node)})")
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise Refused(f"mapping keys must be strings, got {key!r} ({_where(key_node)})")
            if key in seen:
                raise Refused(f"duplicate key '{key}' ({_where(key_node)})")
            seen.add(key)
        return super().construct_mapping(node, deep=True)

    def construct_located_map(self, node: MappingNode) -> Any:
        """SafeLoader's mapping constructor, building a ``Located`` that keeps each key's line."""
        data = Located()
        yield data
        data.update(self.construct_mapping(node))
        data.lines = {key.value: key.start_mark.line + 1 for key, _ in node.value if isinstance(key.value, str)}


_StrictLoader.add_constructor("tag:yaml.org,2002:map", _StrictLoader.construct_located_map)


def _check_tag(event: ScalarEvent | CollectionStartEvent) -> None:
    tag = event.tag
    if tag is None or tag == "!" or tag in _PLAIN_TAGS:
        return
    raise Refused(f"YAML tag '{tag}' is refused ({_where(event)}): only plain values are allowed")


def _unbuildable(node: Node) -> str:
    """The sentence for a scalar that resolved to a type but cannot be built as one."""
    text = str(node.value) if isinstance(node.value, str) else ""
    shown = "".join(c if c.isprintable() else "?" for c in text[:_EXCERPT])
    shown = f"'{shown}'" if len(text) <= _EXCERPT else f"'{shown}…' ({len(text)} characters)"
    kind = _KINDS.get(node.tag, "a value")
    return f"YAML value {shown} at {_where(node)} cannot be read as {kind}: quote it to make it a string"


def _where(item: Any) -> str:
    mark = getattr(item, "start_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "unknown place"


def decode_text(data: bytes, *, max_bytes: int, what: str) -> str:
    """Check size and encoding of raw bytes: at most ``max_bytes``, strict UTF-8, no BOM."""
    if len(data) > max_bytes:
        raise Refused(f"{what} is {len(data)} bytes, more than the limit of {max_bytes} bytes")
    if data.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
        raise Refused(f"{what} starts with a byte order mark: save it as UTF-8 without BOM")
    try:
        return data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise Refused(f"{what} is not valid UTF-8 (byte {exc.start})") from None


def load_mapping(data: bytes, *, max_bytes: int, what: str) -> dict[str, Any]:
    """Parse ``data`` as exactly one YAML document whose top level is a mapping."""
    text = decode_text(data, max_bytes=max_bytes, what=what)
    try:
        loader = _StrictLoader(text)  # the reader already refuses control characters here
        try:
            document = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise Refused(f"{what} is not valid YAML: {_one_line(exc)}") from None
    except RecursionError:
        raise Refused(f"{what} nests too deeply") from None
    if document is None:
        raise Refused(f"{what} is empty: expected a mapping of fields")
    if not isinstance(document, dict):
        raise Refused(f"{what} must be a mapping of fields at the top level, not a {_kind(document)}")
    return document


def _one_line(exc: yaml.YAMLError) -> str:
    context = getattr(exc, "context", None)
    problem = " ".join(filter(None, [context, getattr(exc, "problem", None)])) or str(exc)
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"{problem}{where}".split())


def _kind(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), type(value).__name__
    )
