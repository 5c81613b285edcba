"""Connection strings read as libpq reads them, cross-checked against libpq's own PQconninfoParse."""

from __future__ import annotations

import ctypes
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.model.conninfo import KEYWORDS, ConninfoError, parse_conninfo
from controller.model.desired import database_reasons


class _Option(ctypes.Structure):
    _fields_ = [
        ("keyword", ctypes.c_char_p),
        ("envvar", ctypes.c_char_p),
        ("compiled", ctypes.c_char_p),
        ("val", ctypes.c_char_p),
        ("label", ctypes.c_char_p),
        ("dispchar", ctypes.c_char_p),
        ("dispsize", ctypes.c_int),
    ]


def _libpq() -> ctypes.CDLL:
    lib = ctypes.CDLL("libpq.so.5")  # Debian's libpq5, installed by scripts/setup
    lib.PQconninfoParse.restype = ctypes.POINTER(_Option)
    lib.PQconninfoParse.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p)]
    lib.PQconndefaults.restype = ctypes.POINTER(_Option)
    lib.PQconninfoFree.argtypes = [ctypes.POINTER(_Option)]
    return lib


LIBPQ = _libpq()


def _options(array: ctypes._Pointer[_Option]) -> dict[str, bytes | None]:
    found: dict[str, bytes | None] = {}
    index = 0
    while array[index].keyword is not None:
        found[array[index].keyword.decode()] = array[index].val
        index += 1
    LIBPQ.PQconninfoFree(array)
    return found


def libpq_reads(text: str) -> dict[str, str] | None:
    """What libpq itself reads from ``text``: the options it sets, or None when it refuses."""
    error = ctypes.c_char_p()
    array = LIBPQ.PQconninfoParse(text.encode("utf-8", "surrogateescape"), ctypes.byref(error))
    if not array:
        return None
    return {k: v.decode("utf-8", "surrogateescape") for k, v in _options(array).items() if v is not None}


def ours(text: str) -> dict[str, str] | None:
    try:
        return parse_conninfo(text)
    except ConninfoError:
        return None


def test_every_keyword_this_libpq_knows_is_known() -> None:
    assert set(_options(LIBPQ.PQconndefaults())) <= KEYWORDS


CASES = [
    "postgresql://u:p@127.0.0.1:5432/dreichor_prod",
    "postgres://h/dreichor_prod",
    "postgresql://h/dreichor_prod?dbname=dreichor_dev",
    "postgresql://h/dreichor_dev?dbname=dreichor_prod",
    "postgresql://h/dreichor_prod?sslmode=require&dbname=dreichor_dev&application_name=x",
    "postgresql://h/dreichor%5Fprod",
    "postgresql://h/dreichor_prod%00",
    "postgresql://h/dreichor_prod%zz",
    "postgresql://h/dreichor_prod%4",
    "postgresql://h/dreichor_prod?",
    "postgresql://h/dreichor_prod?&",
    "postgresql://h/dreichor_prod?a=b",
    "postgresql://h/dreichor_prod?dbname",
    "postgresql://h/dreichor_prod?dbname=a=b",
    "postgresql://h/dreichor_prod?ssl=true",
    "postgresql://h/dreichor_prod?dbname=x&",
    "postgresql://h/dreichor_prod?dbname=",
    "postgresql://h/dreichor_prod#frag",
    "postgresql://h/a/b",
    "postgresql://h",
    "postgresql://",
    "postgresql:///dreichor_prod",
    "postgresql://dreichor_prod@h",
    "postgresql://u@h?dbname=dreichor_prod",
    "postgresql://u:@h/db",
    "postgresql://:pw@h/db",
    "postgresql://u:p:q@h/db",
    "postgresql://a@b@h/db",
    "postgresql://h1:1,h2:2/dreichor_prod",
    "postgresql://h1,,h2/db",
    "postgresql://[::1]:5432/dreichor_prod",
    "postgresql://[::1/db",
    "postgresql://[]/db",
    "postgresql://[::1]x/db",
    "postgresql://h:5432?dbname=dreichor_prod",
    "postgresql://%68/db",
    "postgresql://h/db?dbname=%64reichor_prod",
    "postgresql://h/caf%C3%A9",
    "postgresql://h/café",
    "POSTGRESQL://h/dreichor_prod",
    "postgresql+psycopg://h/dreichor_prod",
    "host=h dbname=dreichor_prod",
    "host=h dbname = dreichor_prod user=u",
    "dbname='dreichor prod'",
    "dbname='dreichor_prod' dbname=dreichor_dev",
    "dbname=dreichor\\_prod",
    "dbname='dreichor\\'s'",
    "dbname='unterminated",
    "dbname=x\\",
    "dbname",
    "dbname x",
    "=x",
    "nokeyword=x",
    "dbname='a'b=c",
    "  ",
    "",
]


@pytest.mark.parametrize("text", CASES)
def test_the_parse_agrees_with_libpq(text: str) -> None:
    assert ours(text) == libpq_reads(text)


FUZZ = settings(max_examples=int(os.environ.get("DREICHOR_FUZZ_EXAMPLES", "500")), deadline=None)
pieces = st.sampled_from(
    ["postgresql://", "postgres://", "u", "p", "@", ":", "/", "?", "&", "=", ",", "[", "]", "::1", "h", "5432",
     "dbname", "host", "user", "ssl", "true", "bogus", "%", "%41", "%00", "%g", "%C3", "'", "\\", " ", "\t",
     "dreichor_prod", "dreichor_dev", "é", "#"]
)  # fmt: skip


@FUZZ
@given(st.lists(pieces, max_size=14).map("".join))
def test_the_parse_agrees_with_libpq_on_arbitrary_strings(text: str) -> None:
    assert ours(text) == libpq_reads(text)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://h/dreichor_prod?dbname=dreichor_dev", "names database 'dreichor_dev', not 'dreichor_prod'"),
        ("postgresql://h/dreichor_dev?dbname=dreichor_prod", None),
        ("postgresql://h/dreichor%5Fprod", None),
        ("postgresql://h1:5432,h2:5433/dreichor_prod?sslmode=require", None),
        ("host=h dbname=dreichor_prod", None),
        ("host=h dbname=dreichor_prod dbname=dreichor_dev", "names database 'dreichor_dev'"),
        ("postgresql://dreichor_prod@h", "names no database"),
        ("postgresql://h/dreichor_prod?bogus=1", "not a connection string libpq accepts"),
        ("postgresql://h/dreichor_prod%00", "not a connection string libpq accepts"),
        ("postgresql+asyncpg://h/dreichor_prod", "not a connection string libpq accepts"),
        ("postgresql://h/dreichor_prod\n", "control character"),
        ("postgresql://u:s3cret@h/x?sslmode=y&password=s3cret2", "names database 'x'"),
    ],
)
def test_database_url_is_judged_as_libpq_reads_it(url: str, expected: str | None) -> None:
    reasons = database_reasons(url, environment="prod")
    assert (reasons == []) if expected is None else (expected in reasons[0]), reasons
    assert "s3cret" not in "".join(reasons)
