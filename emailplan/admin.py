"""Command-line administration against the data-plane API: suppression import, plan counts.

People run these from a laptop or a CI job, so they speak HTTP to ``emailplan api``
(``EMAILPLAN_API_URL``, ``EMAILPLAN_API_KEY``) rather than opening the database, and long
work (a suppression list of a million addresses) shows a progress bar.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from emailplan.contract import STATUS_COUNTS
from emailplan.contract.recipients import Recipient, validate_row

BATCH = 1000


class AdminError(Exception):
    """A problem to show the user in one line (exit code 1)."""


class ApiClient:
    """Tiny JSON client of the administration API; the key is sent, never shown."""

    def __init__(self, url: str | None, key: str | None) -> None:
        self.url = (url or os.environ.get("EMAILPLAN_API_URL") or "").rstrip("/")
        self.key = key or os.environ.get("EMAILPLAN_API_KEY") or ""
        if not self.url:
            raise AdminError("--api-url (or EMAILPLAN_API_URL) is required")
        if not self.url.startswith(("http://", "https://")):
            raise AdminError(f"--api-url must start with http:// or https://, got {self.url!r}")
        if not self.key:
            raise AdminError("--api-key (or EMAILPLAN_API_KEY) is required")

    def call(self, method: str, path: str, body: Any | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(  # noqa: S310 - URL scheme checked in __init__
            self.url + path,
            data=data,
            method=method,
            headers={"x-api-key": self.key, "content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 - URL scheme checked above
                return json.load(resp)
        except urllib.error.HTTPError as exc:
            try:
                err = json.load(exc).get("error", {})
                detail = f"{err.get('field', '')}: {err.get('message', '')}".strip(": ")
            except ValueError:
                detail = exc.reason
            raise AdminError(f"{method} {path} answered {exc.code}: {detail}") from None
        except urllib.error.URLError as exc:
            raise AdminError(f"cannot reach {self.url}: {exc.reason}") from None


def read_addresses(handle: TextIO) -> Iterator[tuple[int, str]]:
    """Rows of a CSV with an ``email`` column, or of a plain list (one address a line)."""
    first = handle.readline()
    if not first:
        return
    header = [h.strip().lower() for h in next(csv.reader([first]))]
    if "email" in header:
        col = header.index("email")
        for row_no, row in enumerate(csv.reader(handle), start=2):
            if row and len(row) > col and row[col].strip():
                yield row_no, row[col].strip()
        return
    if first.strip():
        yield 1, first.strip()
    for row_no, line in enumerate(handle, start=2):
        if line.strip():
            yield row_no, line.strip()


def import_suppressions(args: argparse.Namespace) -> int:
    """Check every row first, then upload: a file with a bad row changes nothing."""
    client = ApiClient(args.api_url, args.api_key)
    path = Path(args.file)
    if not path.is_file():
        raise AdminError(f"FILE {args.file!r} does not exist")
    console = Console(stderr=True)
    columns = (BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(
        TextColumn("[bold]{task.description}"), *columns, console=console, disable=args.quiet
    ) as bar:
        rows = _checked_rows(path, bar)
        task = bar.add_task("uploading", total=len(rows))
        received = added = 0
        for start in range(0, len(rows), BATCH):
            batch = rows[start : start + BATCH]
            out = client.call("POST", "/v1/suppressions", {"emails": batch, "reason": args.reason})
            received, added = received + int(out["received"]), added + int(out["added"])
            bar.update(task, advance=len(batch))
    print(json.dumps({"received": received, "added": added}))
    return 0


def _checked_rows(path: Path, bar: Progress) -> list[str]:
    """Every address of the file, normalised; AdminError listing bad rows (by number) if any."""
    task = bar.add_task("checking", total=path.stat().st_size)
    good: list[str] = []
    bad: list[str] = []
    with path.open("rb") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as handle:
        try:
            for row_no, value in read_addresses(handle):
                checked = validate_row(row_no, {"email": value})
                if isinstance(checked, Recipient):
                    good.append(checked.email)
                else:
                    bad.append(f"row {row_no}: {value!r} is not a valid address")
                if row_no % 1000 == 0:
                    bar.update(task, completed=raw.tell())
        except UnicodeDecodeError as exc:
            raise AdminError(f"FILE is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    bar.update(task, completed=path.stat().st_size)
    if bad:
        more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
        raise AdminError("nothing imported; fix these rows first:\n  " + "\n  ".join(bad[:10]) + more)
    return good


def show_counts(args: argparse.Namespace) -> int:
    client = ApiClient(args.api_url, args.api_key)
    counts = client.call("GET", f"/v1/results/count/{args.plan_id}")
    if args.json:
        print(json.dumps(counts))
        return 0
    table = Table(title=f"plan {args.plan_id}")
    table.add_column("count")
    table.add_column("value", justify="right")
    for key in STATUS_COUNTS:
        table.add_row(key, str(counts.get(key, 0)))
    Console().print(table)
    return 0


def run(func: str, args: argparse.Namespace) -> int:
    try:
        return int(globals()[func](args))
    except AdminError as exc:
        print(f"emailplan: error: {exc}", file=sys.stderr)
        return 1
