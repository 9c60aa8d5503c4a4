"""The one recipient reader: CSV or NDJSON bytes in, numbered and validated rows out.

Every intake (inline lists and ConfigMaps the operator uploads, HTTP uploads,
S3 objects the data plane reads) goes through :class:`RecipientReader`, so a
list is read the same way wherever it comes from: a byte-order mark and CRLF
line ends are ignored, a CSV header matches ``email``/``name`` whatever its
case or quoting, a quoted field may hold a newline, and rows are numbered in
records (the first data record is row 1), never in physical lines.

The reader is a push parser (``feed`` bytes as they arrive, ``finish`` at the
end) so a stream of any size is read in bounded memory, and the same code
serves a whole string (:func:`read_text`). Addresses go through
:func:`emailplan.contract.addresses.normalize_address`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeGuard
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from emailplan.contract import jsonbounds, textcheck
from emailplan.contract.addresses import AddressError, normalize_address
from emailplan.contract.headers import header_problem

MAX_NAME_LEN = 256
MAX_VARS_BYTES = 16 * 1024
MAX_RECORD_BYTES = 1024 * 1024
RESERVED_COLUMNS = ("email", "name")
TIME_ZONE_FIELD = "timeZone"  # a row's IANA zone: a field, a var, or a CSV column (any case)
MAX_ZONE_LEN = 64
BOM = b"\xef\xbb\xbf"
VARS_NOT_AN_OBJECT = "vars must be an object with string keys"


class ListFormat(StrEnum):
    """How a recipient list is written."""

    CSV = "csv"
    NDJSON = "ndjson"

    @classmethod
    def parse(cls, value: str) -> ListFormat:
        """``csv``, ``ndjson`` or ``jsonl`` (the CRD's word), any case."""
        text = value.strip().lower()
        return cls.NDJSON if text in ("jsonl", "json-lines") else cls(text)


class ListError(ValueError):
    """The list as a whole cannot be read (no email column, header not UTF-8, a huge record)."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class EmptyListError(ListError):
    """The list holds no row at all (not even a header): nothing to send, and reading again will not help."""


@dataclass(slots=True)
class Recipient:
    """A valid row, ready for the ledger.

    Not frozen: one is made for every row of a list, and a frozen dataclass's ``__init__``
    (``object.__setattr__`` per field) cost three times as much, a tenth of a million-row load.
    """

    row: int
    email: str
    name: str | None = None
    vars: dict[str, Any] = field(default_factory=dict)
    vars_json: str = "{}"  # serialized once here, stored as-is (jsonb)
    time_zone: str | None = None  # the recipient's IANA zone (local-time windows); None: the fallback

    def as_context(self) -> dict[str, Any]:
        """The row as template validation sees it (``email``, ``name``, ``vars``)."""
        return {"email": self.email, "name": self.name, "vars": dict(self.vars)}


@dataclass(frozen=True, slots=True)
class RowError:
    """Why row ``row`` was refused; ``field`` names the offending field ("" for the whole row)."""

    row: int
    field: str
    message: str


Row = Recipient | RowError


# The standard encoder, for what orjson cannot encode (see ``_encode_vars``).
_encode_vars_slowly = json.JSONEncoder(default=str, ensure_ascii=False).encode


def _encode_vars(variables: dict[Any, Any]) -> str | None:
    """The row's vars as the JSON text the ledger stores (jsonb normalizes its form), or None
    when a key is not a string.

    orjson, because the standard encoder's set-up on every call was the largest single cost
    of loading a big list (18 % of the loader's CPU for a one-key object). orjson refuses
    what the rare row has: a key that is not a string (checked only then), an integer beyond
    64 bits, a lone surrogate (the standard encoder keeps it for :func:`textcheck.unstorable` to refuse).
    """
    try:
        return orjson.dumps(variables, default=str).decode()
    except orjson.JSONEncodeError:
        if not all(isinstance(key, str) for key in variables):
            return None
        return _encode_vars_slowly(variables)


def time_zone_problem(value: object) -> str | None:
    """Why ``value`` is not a time zone this reader accepts (an IANA name zoneinfo knows), or None."""
    text = value.strip() if isinstance(value, str) else None
    if text is None or len(text) > MAX_ZONE_LEN:
        return f"{TIME_ZONE_FIELD} must be an IANA time zone name (e.g. Europe/Berlin)"
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        shown = text[:MAX_ZONE_LEN]
        return f"{TIME_ZONE_FIELD} {shown!r} is not an IANA time zone (e.g. Europe/Berlin, Asia/Tokyo)"
    return None


def _row_zone(data: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(zone, problem): the row's ``timeZone`` field, else its ``timeZone`` var (any case); blank is none."""
    value = data.get(TIME_ZONE_FIELD)
    if value is None:
        value = _zone_var(data.get("vars"))
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    problem = time_zone_problem(value)
    return (None, problem) if problem else (str(value).strip(), None)


_ZONE_KEY = TIME_ZONE_FIELD.lower()


def _zone_var(variables: object) -> Any:
    """The value of the ``timeZone`` var in any case, or None (a plain loop: this runs for every row)."""
    if not _is_mapping(variables):
        return None
    for key, value in variables.items():
        if isinstance(key, str) and len(key) == len(_ZONE_KEY) and key.lower() == _ZONE_KEY:
            return value
    return None


def _is_mapping(value: object) -> TypeGuard[Mapping[Any, Any]]:
    """``isinstance(value, Mapping)``, without the abstract-class check for the usual dict."""
    return type(value) is dict or isinstance(value, Mapping)


def validate_row(row: int, data: Mapping[str, Any]) -> Row:
    """Validate one parsed row (``{email, name?, vars?, timeZone?}``)."""
    if not _is_mapping(data):
        return RowError(row, "", "row must be an object with an email field")
    email = data.get("email")
    if not isinstance(email, str) or not email.strip():
        return RowError(row, "email", "email is required")
    if textcheck.unstorable(email):
        return RowError(row, "email", "email contains a NUL or an invalid Unicode character")
    try:
        normalized = normalize_address(email)
    except AddressError as exc:
        return RowError(row, "email", str(exc))
    name = data.get("name")
    if name is not None:
        if not isinstance(name, str):
            return RowError(row, "name", "name must be a string")
        name = name.strip() or None
        if name is not None and textcheck.unstorable(name):
            return RowError(row, "name", "name contains a NUL or an invalid Unicode character")
        if name is not None and (len(name) > MAX_NAME_LEN or header_problem(name)):
            return RowError(row, "name", f"name must be one line of at most {MAX_NAME_LEN} characters")
    zone, zone_problem = _row_zone(data)
    if zone_problem:
        return RowError(row, TIME_ZONE_FIELD, zone_problem)
    variables = data.get("vars")
    if not variables:
        return Recipient(row, normalized, name, {}, "{}", zone)
    if not _is_mapping(variables):
        return RowError(row, "vars", VARS_NOT_AN_OBJECT)
    variables = dict(variables)
    encoded = _encode_vars(variables)
    if encoded is None:
        return RowError(row, "vars", VARS_NOT_AN_OBJECT)
    if "\\u0000" in encoded or textcheck.unstorable(encoded):  # jsonb refuses the escape too
        return RowError(row, "vars", "vars contain a NUL or an invalid Unicode character")
    if len(encoded) > MAX_VARS_BYTES:
        return RowError(row, "vars", f"vars larger than {MAX_VARS_BYTES} bytes")
    return Recipient(row, normalized, name, variables, encoded, zone)  # by position: cheaper than by name


class RecipientReader:
    """Push parser for one list: ``feed(chunk)`` returns the rows completed so far, ``finish()`` the rest."""

    def __init__(self, fmt: ListFormat | str, *, max_record_bytes: int = MAX_RECORD_BYTES) -> None:
        self.format = fmt if isinstance(fmt, ListFormat) else ListFormat.parse(fmt)
        self._max_record = max_record_bytes
        self._buf = bytearray()
        self._scan = 0  # where the next newline search starts
        self._quoted = False  # CSV: inside a quoted field at ``_scan``
        self._started = False  # the BOM check happened
        self._columns: list[str] | None = None
        self._row = 0  # number of the last data record handed out

    def feed(self, chunk: bytes) -> list[Row]:
        self._buf += chunk
        if not self._started:
            if len(self._buf) < len(BOM) and BOM.startswith(bytes(self._buf)):
                return []
            if self._buf.startswith(BOM):
                del self._buf[: len(BOM)]
            self._started = True
        out: list[Row] = []
        start = 0
        while True:
            nl = self._buf.find(b"\n", self._scan)
            if nl < 0:
                break
            if self.format is ListFormat.CSV:
                self._quoted ^= self._buf.count(b'"', self._scan, nl) % 2 == 1
                if self._quoted:  # the newline is inside a quoted field: the record goes on
                    self._scan = nl + 1
                    continue
            out += self._record(bytes(self._buf[start:nl]))
            start = self._scan = nl + 1
        del self._buf[:start]
        self._scan -= start
        if len(self._buf) > self._max_record:
            raise ListError(f"a record after row {self._row} is longer than {self._max_record} bytes")
        return out

    def finish(self) -> list[Row]:
        out = self.feed(b"") if not self._started else []
        if self._buf.strip():
            out += self._record(bytes(self._buf))
        self._buf.clear()
        if self.format is ListFormat.CSV and self._columns is None:
            raise EmptyListError("the CSV list is empty: it needs a header row with an email column", "email")
        return out

    def _record(self, raw: bytes) -> list[Row]:
        raw = raw.removesuffix(b"\r")
        if self.format is ListFormat.CSV and self._columns is None:
            self._columns = self._header(raw)
            return []
        self._row += 1
        row = self._row
        if not raw.strip():
            return []  # a blank record is skipped, but keeps its number
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return [RowError(row, "", "row is not valid UTF-8")]
        if self.format is ListFormat.NDJSON:
            return [self._json_row(row, text)]
        item = self._csv_row(row, text)
        return [] if item is None else [item]

    @staticmethod
    def _header(raw: bytes) -> list[str]:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ListError("the CSV header is not valid UTF-8", "email") from exc
        cells = next(csv.reader([text]), [])
        columns = []
        for cell in cells:
            name = cell.strip()
            columns.append(name.lower() if name.lower() in RESERVED_COLUMNS else name)
        if "email" not in columns:
            raise ListError(
                f"the CSV header has no email column (it has: {', '.join(columns)[:200]})", "email"
            )
        return columns

    def _csv_row(self, row: int, text: str) -> Row | None:
        assert self._columns is not None
        try:
            values = next(csv.reader([text], strict=True), [])
        except csv.Error as exc:
            return RowError(row, "", f"not valid CSV: {exc}")
        if not any(v.strip() for v in values):
            return None  # ",,," is a blank row a spreadsheet left behind
        if len(values) != len(self._columns):
            return RowError(row, "", f"expected {len(self._columns)} columns, got {len(values)}")
        record = dict(zip(self._columns, values, strict=True))
        extra = {k: v for k, v in record.items() if k not in RESERVED_COLUMNS}
        return validate_row(
            row, {"email": record["email"], "name": record.get("name") or None, "vars": extra}
        )

    @staticmethod
    def _json_row(row: int, text: str) -> Row:
        try:
            value = jsonbounds.loads(text)
        except json.JSONDecodeError as exc:
            return RowError(row, "", f"not valid JSON: {exc.msg}")
        if not isinstance(value, dict):
            return RowError(row, "", "row must be a JSON object")
        return validate_row(row, value)


def read_text(data: str | bytes, fmt: ListFormat | str) -> Iterator[Row]:
    """Every row of a whole list held in memory (inline lists, ConfigMap values, tests)."""
    reader = RecipientReader(fmt)
    yield from reader.feed(data.encode("utf-8") if isinstance(data, str) else data)
    yield from reader.finish()


def first_recipient(data: str | bytes, fmt: ListFormat | str) -> Recipient | None:
    """The first valid row, to check templates against real variables (None: the list has none)."""
    for item in read_text(data, fmt):
        if isinstance(item, Recipient):
            return item
    return None
