"""The one recipient reader (pure): what an uploader is told, row by row, whatever the intake."""

from __future__ import annotations

import json
from typing import Any

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from emailplan.contract.addresses import AddressError, normalize_address
from emailplan.contract.recipients import (
    ListError,
    ListFormat,
    Recipient,
    RecipientReader,
    RowError,
    read_text,
    validate_row,
)


@pytest.mark.parametrize(
    ("data", "email"),
    [
        ({"email": "ann@example.com"}, "ann@example.com"),
        ({"email": "  Ann.Lee+news@Mail.Example.COM "}, "ann.lee+news@mail.example.com"),
        ({"email": "zoe@exämple.com"}, "zoe@xn--exmple-cua.com"),
        ({"email": "o'brien@example.ie"}, "o'brien@example.ie"),
    ],
)
def test_valid_addresses_are_normalized(data: dict[str, Any], email: str) -> None:
    result = validate_row(3, data)
    assert isinstance(result, Recipient) and result.email == email and result.row == 3


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({}, "email"),
        ({"email": ""}, "email"),
        ({"email": 42}, "email"),
        ({"email": "no-at-sign"}, "email"),
        ({"email": "two@@example.com"}, "email"),
        ({"email": "dots..x@example.com"}, "email"),
        ({"email": "a@localhost"}, "email"),
        ({"email": "a@b.test"}, "email"),
        ({"email": "a@-bad.com"}, "email"),
        ({"email": "x" * 250 + "@example.com"}, "email"),
        ({"email": "a@example.com", "name": 5}, "name"),
        ({"email": "a@example.com", "name": "A\nB"}, "name"),
        ({"email": "a@example.com", "vars": [1]}, "vars"),
        ({"email": "a@example.com", "vars": {"big": "x" * 20000}}, "vars"),
        ({"email": "a\x00b@example.com"}, "email"),
        ({"email": "a@example.com", "name": "A\x00"}, "name"),
        ({"email": "a@example.com", "name": "bad \udc80"}, "name"),
        ({"email": "a@example.com", "vars": {"k": "\x00"}}, "vars"),
        ({"email": "a@example.com", "vars": {"k": "\ud800"}}, "vars"),
        ({"email": "a@example.com", "vars": {1: "x"}}, "vars"),
        ({"email": "a@example.com", "vars": {"k": {"\ud800": 1}}}, "vars"),
    ],
)
def test_invalid_rows_name_the_field(data: dict[str, Any], field: str) -> None:
    result = validate_row(7, data)
    assert isinstance(result, RowError) and result.row == 7 and result.field == field and result.message


@pytest.mark.parametrize(
    "variables",
    [
        {"id": 2**70, "n": -(2**64)},  # beyond 64 bits: stored exactly, not refused
        {"nested": {"1": [1.5, None, True, "é \u2028"]}, "empty": {}},
        {"k": "x" * 100},
    ],
)
def test_vars_are_stored_as_the_json_of_what_was_written(variables: dict[str, Any]) -> None:
    result = validate_row(1, {"email": "a@example.com", "vars": variables})
    assert isinstance(result, Recipient) and result.vars == variables
    assert json.loads(result.vars_json) == variables


def rows(text: str | bytes, fmt: ListFormat, chunk: int = 0) -> list[Recipient | RowError]:
    """Read a whole list; ``chunk`` > 0 feeds it in pieces of that many bytes (as a stream arrives)."""
    data = text.encode() if isinstance(text, str) else text
    if not chunk:
        return list(read_text(data, fmt))
    reader = RecipientReader(fmt)
    out: list[Recipient | RowError] = []
    for start in range(0, len(data), chunk):
        out += reader.feed(data[start : start + chunk])
    return out + reader.finish()


def emails(items: list[Recipient | RowError]) -> list[tuple[int, str]]:
    return [(r.row, r.email if isinstance(r, Recipient) else f"error:{r.field}") for r in items]


@pytest.mark.parametrize("chunk", [0, 1, 7])
@pytest.mark.parametrize(
    "header",
    [
        "email,name,city",
        '"email","name","city"',
        "Email,Name,City",
        " EMAIL , name ,city",
        "\ufeffemail,name,city",
    ],
)
def test_csv_header_case_quotes_and_bom_are_one_format(header: str, chunk: int) -> None:
    text = header + "\r\nAnn@Example.COM,Ann,Oslo\r\nbob@example.com,Bob,Lima\r\n"
    out = rows(text, ListFormat.CSV, chunk)
    assert emails(out) == [(1, "ann@example.com"), (2, "bob@example.com")]
    first = out[0]
    assert isinstance(first, Recipient) and first.name == "Ann"
    assert set(first.vars) == {"City" if "City" in header else "city"}  # a BOM never sticks to a name
    assert first.vars[next(iter(first.vars))] == "Oslo"  # CRLF leaves no \r behind


@pytest.mark.parametrize("chunk", [0, 3])
def test_csv_rows_are_records_not_lines(chunk: int) -> None:
    text = (
        'email,name,note\na@example.com,"Ann","two\nlines"\r\n'
        'not-an-address,X,y\n\nc@example.com,C,"say ""hi"""\n'
    )
    out = rows(text, ListFormat.CSV, chunk)
    assert emails(out) == [(1, "a@example.com"), (2, "error:email"), (4, "c@example.com")]
    assert isinstance(out[0], Recipient) and out[0].vars == {"note": "two\nlines"}
    assert isinstance(out[2], Recipient) and out[2].vars == {"note": 'say "hi"'}


def test_csv_wrong_column_count_and_bad_utf8_keep_their_row() -> None:
    data = b"email,name\na@example.com,A\nb@example.com\n\xff\xfe@example.com,Z\nd@example.com,D\n"
    out = rows(data, ListFormat.CSV)
    assert emails(out) == [(1, "a@example.com"), (2, "error:"), (3, "error:"), (4, "d@example.com")]
    assert "UTF-8" in out[2].message  # type: ignore[union-attr]


@pytest.mark.parametrize("text", ["mail,name\na@example.com,A\n", "", "\ufeff"])
def test_csv_without_email_column_is_a_list_error(text: str) -> None:
    with pytest.raises(ListError) as err:
        rows(text, ListFormat.CSV)
    assert err.value.field == "email"


@pytest.mark.parametrize("chunk", [0, 2])
def test_ndjson_rows_count_lines_with_bom_crlf_and_blanks(chunk: int) -> None:
    text = (
        '\ufeff{"email": "a@example.com"}\r\n\r\nnot json\n[1]\n{"email": "B@example.com", "vars": {"k": 1}}'
    )
    out = rows(text, ListFormat.NDJSON, chunk)
    assert emails(out) == [(1, "a@example.com"), (3, "error:"), (4, "error:"), (5, "b@example.com")]
    assert isinstance(out[3], Recipient) and out[3].vars == {"k": 1}


def test_addresses_go_through_the_strict_contract_check() -> None:
    text = "email\n" + "x" * 65 + "@example.com\nok@example.com\n"
    out = rows(text, ListFormat.CSV)
    assert isinstance(out[0], RowError) and "before @" in out[0].message
    assert emails(out)[1] == (2, "ok@example.com")


def test_format_names_accept_jsonl() -> None:
    assert ListFormat.parse("jsonl") is ListFormat.NDJSON and ListFormat.parse("CSV") is ListFormat.CSV


@settings(max_examples=3000, deadline=None)
@given(
    st.from_regex(
        r"[a-zA-Z0-9._%+-]{0,70}@[a-zA-Z0-9.-]{0,30}(\.(test|local|[a-zA-Z0-9-]{1,8}))?", fullmatch=True
    )
    | st.text(alphabet="aZ09.-@+_xn", max_size=20)
)
def test_fast_address_path_agrees_with_the_full_validator(address: str) -> None:
    """The shortcut for plain addresses accepts only what email-validator accepts, normalised alike."""
    try:
        fast = normalize_address(address)
    except AddressError:
        fast = None
    try:
        full: str | None = str(
            validate_email(address, check_deliverability=False, allow_smtputf8=False, strict=True).ascii_email
        ).lower()
    except EmailNotValidError:
        full = None
    if len(address.rpartition("@")[0]) > 64 or len(address) > 254:
        full = None
    assert fast == full
