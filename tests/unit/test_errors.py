"""Reason codes: one vocabulary for status, audit, logs and metrics."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from controller.errors import Reason, Refused, Retryable

PACKAGE = Path(__file__).resolve().parents[2] / "controller"


def test_every_reason_code_in_the_package_is_a_reason_member_not_a_string() -> None:
    literals = [
        f"{path.relative_to(PACKAGE)}: {code}"
        for path in PACKAGE.rglob("*.py")
        for code in re.findall(r'code="\w*"', path.read_text(encoding="utf-8"))
    ]
    assert literals == []


def test_every_reason_member_is_used_in_the_package() -> None:
    text = "\n".join(p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py"))
    assert [reason.name for reason in Reason if f"Reason.{reason.name}" not in text] == []


def test_a_reason_given_by_name_becomes_the_constant() -> None:
    assert Refused("no", code="Unsigned").code is Reason.UNSIGNED
    assert Retryable("later", code="FetchFailed").code is Reason.FETCH_FAILED


def test_a_reason_serialises_as_its_plain_name() -> None:
    assert f"{Reason.HISTORY_REWRITTEN}" == "HistoryRewritten"


def test_an_unknown_reason_fails_loudly() -> None:
    with pytest.raises(ValueError, match="NoSuchReason"):
        Refused("no", code="NoSuchReason")
