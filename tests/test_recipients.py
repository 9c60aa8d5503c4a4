"""Recipient row validation and parsing (pure): what an uploader is told, row by row."""

from __future__ import annotations

from typing import Any

import pytest

from emailplan.sender.recipients import Recipient, RowError, parse_csv, parse_ndjson, validate_row


@pytest.mark.parametrize(
    ("data", "email"),
    [
        ({"email": "ann@example.com"}, "ann@example.com"),
        ({"email": "  Ann.Lee+news@Mail.Example.COM "}, "ann.lee+news@mail.example.com"),
        ({"email": "zoë@exämple.com"}, "zoë@exämple.com"),
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
    ],
)
def test_invalid_rows_name_the_field(data: dict[str, Any], field: str) -> None:
    result = validate_row(7, data)
    assert isinstance(result, RowError) and result.row == 7 and result.field == field and result.message


def test_ndjson_reports_bad_lines_with_row_numbers() -> None:
    lines = [
        '{"email": "a@example.com"}',
        "",
        "not json",
        "[1]",
        '{"email": "b@example.com", "vars": {"k": 1}}',
    ]
    out = list(parse_ndjson(lines))
    assert [row for row, _ in out] == [1, 3, 4, 5]
    assert isinstance(out[1][1], RowError) and out[1][1].row == 3
    assert isinstance(out[2][1], RowError)
    assert out[3][1] == {"email": "b@example.com", "vars": {"k": 1}}


def test_csv_extra_columns_become_vars() -> None:
    out = list(
        parse_csv(["email,name,code", "a@example.com,Ann,X1", "b@example.com,,", "c@example.com,only-two"])
    )
    assert out[0] == (1, {"email": "a@example.com", "name": "Ann", "vars": {"code": "X1"}})
    assert out[1] == (2, {"email": "b@example.com", "name": None, "vars": {"code": ""}})
    assert isinstance(out[2][1], RowError) and out[2][0] == 3


def test_csv_without_email_column_is_refused() -> None:
    out = list(parse_csv(["mail,name", "a@example.com,A"]))
    assert len(out) == 1 and isinstance(out[0][1], RowError) and out[0][1].field == "email"
