"""Command-line administration against the data-plane API: suppression import, plan counts, failures.

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
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO, cast

from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from emailplan.contract import STATUS_COUNTS
from emailplan.contract.failures import MAX_FAILURE_PAGE, FailedMessage, FailurePage
from emailplan.contract.httpapi import LIST_FAILURES, PLAN_COUNTS, SUPPRESSIONS
from emailplan.contract.plans import VariantCounts
from emailplan.contract.recipients import Recipient, validate_row
from emailplan.contract.route import Route

BATCH = 1000


class AdminError(Exception):
    """A problem to show the user in one line (exit code 1)."""


class ApiAnswered(AdminError):
    """The API answered with an HTTP error ``status``."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ApiClient:
    """Tiny JSON client of the administration API; the key is sent, never shown.

    Every failure becomes one ``AdminError`` line that says what went wrong and what to
    change, because the person reading it is at a terminal, not in the API's log.
    """

    def __init__(self, url: str | None, key: str | None) -> None:
        self.url = (url or os.environ.get("EMAILPLAN_API_URL") or "").rstrip("/")
        self.key = key or os.environ.get("EMAILPLAN_API_KEY") or ""
        if not self.url:
            raise AdminError(
                "no API URL: set EMAILPLAN_API_URL (e.g. http://emailplan-api:8080) or pass --api-url"
            )
        if not self.url.startswith(("http://", "https://")):
            raise AdminError(f"--api-url must start with http:// or https://, got {shown_url(self.url)!r}")
        if not self.key:
            raise AdminError(
                "no API key: set EMAILPLAN_API_KEY or pass --api-key (the key the API runs with)"
            )

    @property
    def shown(self) -> str:
        return shown_url(self.url)

    def call(self, route: Route, path: str, body: Any | None = None) -> Any:
        """``route`` at ``path`` (its URL, from ``route.url``), with an optional JSON body."""
        method = route.method
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
            problem = http_problem(f"{method} {path}", exc.code, _detail(exc), self.shown)
            raise ApiAnswered(problem, exc.code) from None
        except urllib.error.URLError as exc:
            raise AdminError(self._unreachable(exc.reason)) from None
        except (TimeoutError, OSError) as exc:
            raise AdminError(self._unreachable(exc)) from None
        except ValueError:
            raise AdminError(
                f"{method} {path} answered something that is not JSON: is {self.shown} the emailplan API? "
                "Fix --api-url / EMAILPLAN_API_URL"
            ) from None

    def _unreachable(self, reason: object) -> str:
        return (
            f"cannot reach the API at {self.shown} ({reason}); start `emailplan api` there "
            "or fix --api-url / EMAILPLAN_API_URL"
        )


def shown_url(url: str) -> str:
    """``url`` without user and password, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _detail(exc: urllib.error.HTTPError) -> str:
    """The API's ``{"error": {"field", "message"}}`` as ``field: message``, else the HTTP reason."""
    try:
        err = json.load(exc).get("error", {})
        detail = f"{err.get('field') or ''}: {err.get('message') or ''}".strip(": ")
    except (ValueError, AttributeError):
        detail = ""
    return " ".join((detail or str(exc.reason)).split())


def http_problem(what: str, code: int, detail: str, url: str) -> str:
    """One line for an HTTP error answer: the request, the answer, and what to do about it."""
    if code >= 500:
        return (
            f"{what} answered {code} ({detail}): the API at {url} failed, not your request; "
            f"its log says why (often its database is unreachable: check {url}/readyz "
            "and the API's EMAILPLAN_DATABASE_URL)"
        )
    if code in (401, 403):
        return f"{what} answered {code}: {detail}; set EMAILPLAN_API_KEY or --api-key to the API's key"
    return f"{what} answered {code}: {detail}"


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
            out = client.call(SUPPRESSIONS, SUPPRESSIONS.url(), {"emails": batch, "reason": args.reason})
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


def plan_call(
    client: ApiClient, ref: str, plan_id: str, route: Route, query: dict[str, str | int] | None = None
) -> Any:
    """GET ``route`` of one plan; a 404 says the data plane does not know the plan, and what to check."""
    try:
        return client.call(route, route.url(query, planId=plan_id))
    except ApiAnswered as exc:
        if exc.status == 404:
            namespace = ref.partition("/")[0] if "/" in ref else "its namespace"
            raise AdminError(
                f"plan {ref} (uid {plan_id}) is not known to the data plane at {client.shown}: the operator "
                "registers a plan once it is valid; see `kubectl describe emailplan` for its conditions. "
                f"No status and no Events there means no operator watches {namespace}: "
                "`emailplan operator --namespace` limits the namespaces it watches (the chart's "
                "watchNamespaces), and it logs them when it starts"
            ) from None
        raise


def show_counts(args: argparse.Namespace) -> int:
    client = ApiClient(args.api_url, args.api_key)
    ref = str(args.plan)
    plan_id = resolve_plan(ref)
    counts = plan_call(client, ref, plan_id, PLAN_COUNTS)
    if args.json:
        print(json.dumps(counts))
        return 0
    table = Table(title=f"plan {ref}" if ref == plan_id else f"plan {ref} (uid {plan_id})")
    table.add_column("count")
    table.add_column("value", justify="right")
    for key in shown_counts(counts):
        table.add_row(key, str(counts.get(key, 0)))
    Console().print(table)
    if counts.get("variants"):
        Console().print(variant_table(counts["variants"]))
    return 0


def failure_pages(client: ApiClient, ref: str, plan_id: str, limit: int | None) -> Iterator[FailedMessage]:
    """The plan's unsent messages, page after page, at most ``limit`` of them."""
    after: str | None = None
    left = limit
    while left is None or left > 0:
        size = MAX_FAILURE_PAGE if left is None else min(MAX_FAILURE_PAGE, left)
        query: dict[str, str | int] = {"limit": size, **({"after": after} if after else {})}
        try:
            page = FailurePage.model_validate(plan_call(client, ref, plan_id, LIST_FAILURES, query))
        except ValidationError:
            raise AdminError(
                f"the API at {client.shown} answered a failures page this CLI cannot read: "
                "is it the same emailplan version?"
            ) from None
        yield from page.items
        if left is not None:
            left -= len(page.items)
        if page.next is None or not page.items:
            return
        after = page.next


FAILURE_COLUMNS = ("email", "status", "reason", "detail", "at")


def show_failures(args: argparse.Namespace) -> int:
    """Table (default) or csv on stdout; csv rows are written as pages arrive, for piping."""
    client = ApiClient(args.api_url, args.api_key)
    ref = str(args.plan)
    plan_id = resolve_plan(ref)
    messages = failure_pages(client, ref, plan_id, args.limit)
    if args.format == "csv":
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(FAILURE_COLUMNS)
        for m in messages:
            at = m.at.isoformat() if m.at else ""
            out.writerow((m.email, m.status.value, m.reason, m.detail or "", at))
        return 0
    title = f"plan {ref}" if ref == plan_id else f"plan {ref} (uid {plan_id})"
    table = Table(
        title=f"{title}: failed and suppressed addresses", caption="the whole error texts: --format csv"
    )
    for column in ("email", "reason", "at"):
        table.add_column(column, overflow="fold")
    shown = 0
    for m in messages:
        table.add_row(m.email, m.reason, m.at.strftime("%Y-%m-%d %H:%M:%S %Z") if m.at else "")
        shown += 1
    if not shown:
        print(f"{title}: no failed or suppressed addresses")
        return 0
    Console().print(table)
    return 0


def variant_table(variants: list[dict[str, Any]]) -> Table:
    """The A/B test as the winner is chosen from it, over the test cohort: a column per variant
    (at most five), so the table fits a terminal however many counts there are."""
    fields = [f.alias or name for name, f in VariantCounts.model_fields.items() if name != "name"]
    table = Table(title="A/B test cohort")
    table.add_column("count")
    for variant in variants:
        table.add_column(str(variant.get("name", "")), justify="right")
    for key in fields:
        table.add_row(key, *(str(variant.get(key, 0)) for variant in variants))
    return table


def shown_counts(counts: dict[str, Any]) -> list[str]:
    """The status counts in their usual order, with ``processing`` (claimed by a pod) after ``created``."""
    order = list(STATUS_COUNTS)
    if "processing" not in order:
        order.insert(order.index("created") + 1, "processing")
    return order + sorted(k for k, v in counts.items() if k not in order and isinstance(v, int))


def resolve_plan(ref: str) -> str:
    """The plan's uid from a uid or from ``NAMESPACE/NAME``, looked up in Kubernetes.

    The data plane knows plans by uid only; people know them by name, and kubectl's
    configuration (``KUBECONFIG``, or the pod's service account) says where to look.
    """
    try:
        return str(uuid.UUID(ref))
    except ValueError:
        pass
    namespace, _, name = ref.partition("/")
    if not namespace or not name or "/" in name:
        raise AdminError(f"PLAN must be the EmailPlan's uid or NAMESPACE/NAME, got {ref!r}")
    import kubernetes
    from kubernetes.client.exceptions import ApiException

    from emailplan.operator.kubeapi import GROUP, PLURAL, VERSION, load_config

    try:
        load_config()
    except Exception as exc:  # noqa: BLE001 - the client raises many types for a bad config
        raise AdminError(
            f"cannot look up EmailPlan {ref}: no usable Kubernetes configuration ({_first_line(exc)}); "
            "set KUBECONFIG to a valid kubeconfig or pass the plan's uid"
        ) from None
    api = kubernetes.client.CustomObjectsApi()
    try:
        plan = cast(
            dict[str, Any],
            api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, _request_timeout=30),
        )
    except ApiException as exc:
        if exc.status == 404:
            raise AdminError(
                f"EmailPlan {name} not found in namespace {namespace}; "
                f"list the plans with `kubectl get emailplans -n {namespace}`"
            ) from None
        raise AdminError(
            f"the Kubernetes API answered {exc.status} ({exc.reason}) for EmailPlan {ref}; "
            "check that KUBECONFIG's user may get emailplans there, or pass the plan's uid"
        ) from None
    except Exception as exc:  # noqa: BLE001 - urllib3 and ssl errors for an unreachable server
        raise AdminError(
            f"cannot reach the Kubernetes API to look up EmailPlan {ref} ({_first_line(exc)}); "
            "check KUBECONFIG or pass the plan's uid"
        ) from None
    return str(plan["metadata"]["uid"])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def run(func: str, args: argparse.Namespace) -> int:
    try:
        return int(globals()[func](args))
    except AdminError as exc:
        print(f"emailplan: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # reading FILE: permission denied, a directory, ...
        print(f"emailplan: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
