"""``untrusted.bounded``: outside text cut to a fixed length with control characters escaped."""

from __future__ import annotations

import pytest

from controller.errors import Refused, Retryable
from controller.untrusted import MAX_CHARS, bounded, bounded_lines


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text", "plain text"),
        ("\x1b[2J clear", "\\x1b[2J clear"),
        ("bell\x07 nul\x00 del\x7f", "bell\\x07 nul\\x00 del\\x7f"),
        ("line\nbreak\r", "line\\x0abreak\\x0d"),
        ("csi \x9b c1", "csi \\x9b c1"),
        ("sep\u2028", "sep\\u2028"),
        ("ümlaut ✓", "ümlaut ✓"),
    ],
)
def test_control_characters_are_escaped_and_printable_text_kept(text: str, expected: str) -> None:
    assert bounded(text) == expected


@pytest.mark.parametrize("size", [MAX_CHARS + 1, 100_000])
def test_long_text_is_cut_with_an_ellipsis(size: int) -> None:
    cut = bounded("n" * size)
    assert len(cut) == MAX_CHARS and cut.endswith("…")


def test_escaping_near_the_limit_never_exceeds_it() -> None:
    assert len(bounded("\x1b" * MAX_CHARS)) == MAX_CHARS


def test_bounding_twice_changes_nothing() -> None:
    once = bounded("\x1b]0;x\x07" + "y" * 1000)
    assert bounded(once) == once


def test_a_log_excerpt_keeps_the_last_lines_each_bounded() -> None:
    logs = "\n".join(f"\x1b[31m{n}" + "z" * 500 for n in range(200))
    lines = bounded_lines(logs).splitlines()
    assert len(lines) == 50 and lines[-1].startswith("\\x1b[31m199")
    assert all(len(line) <= MAX_CHARS for line in lines)


def test_error_reasons_are_bounded_where_they_are_made() -> None:
    refused = Refused(["a" * 10_000, "\x1b[2J"])
    assert [len(r) for r in refused.reasons] == [MAX_CHARS, 7]
    assert Retryable("\x00" * 5).reason == "\\x00" * 5
