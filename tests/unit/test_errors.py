"""Reason codes: one vocabulary for status, audit, logs and metrics."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from controller.errors import Reason, Refused, Retryable

PACKAGE = Path(__file__).resolve().parents[2] / "controller"


def test_every_reason_code_written_in_the_package_is_a_known_reason() -> None:
    written = {
        code for path in PACKAGE.rglob("*.py") for code in re.findall(r'code="(\w+)"', path.read_text(encoding="utf-8"))
    }
    assert written <= {reason.value for reason in Reason}


def test_a_reason_given_by_name_becomes_the_constant() -> None:
    assert Refused("no", code="Unsigned").code is Reason.UNSIGNED
    assert Retryable("later", code="FetchFailed").code is Reason.FETCH_FAILED


def test_a_reason_serialises_as_its_plain_name() -> None:
    assert f"{Reason.HISTORY_REWRITTEN}" == "HistoryRewritten"


def test_an_unknown_reason_fails_loudly() -> None:
    with pytest.raises(ValueError, match="NoSuchReason"):
        Refused("no", code="NoSuchReason")
