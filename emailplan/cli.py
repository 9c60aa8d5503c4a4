"""The ``emailplan`` command: one console entry point, one subcommand per process.

Subcommands import their implementation lazily so ``emailplan --help`` stays
fast and the operator image never loads the database driver it does not use.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from emailplan import __version__
from emailplan.runtime.startup import StartupError

EPILOG = """\
processes (each reads its settings from EMAILPLAN_* environment variables):
  operator     control plane: watches EmailPlan resources, scales sender pods
  worker       data plane: sends one plan's emails from SQS through SES
  api          data plane: SNS results, tracking pixel, clicks, unsubscribe, stats
  db upgrade   apply database migrations (run once per release, before api/worker)

administration (talks to the API with EMAILPLAN_API_URL and EMAILPLAN_API_KEY):
  suppressions import FILE   import a suppression list, with a progress bar
  stats NAMESPACE/NAME       a plan's counts (or stats PLAN_UID)
  failures NAMESPACE/NAME    a plan's failed and suppressed addresses with why (or PLAN_UID)

local development stacks only (EMAILPLAN_DEV_MODE=1):
  sns EVENT NAMESPACE/NAME   simulated SES delivery/bounce/complaint, reader open/click

examples:
  emailplan db upgrade
  EMAILPLAN_PLAN_ID=<uid> emailplan worker
  emailplan api --port 8080
  emailplan operator --namespace mail
"""


def _run(target: str) -> Callable[[argparse.Namespace], int]:
    """Return a runner that imports ``module:function`` only when chosen."""

    def runner(args: argparse.Namespace) -> int:
        module_name, func_name = target.split(":")
        func = getattr(importlib.import_module(module_name), func_name)
        result = func(args)
        return int(result or 0)

    return runner


def _whole_number(value: str, prefix: str = "") -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{prefix}{value!r} is not a whole number") from None


def _processes(value: str) -> int:
    n = _whole_number(value, "--processes: ")
    if not 0 <= n <= 256:
        raise argparse.ArgumentTypeError(f"--processes: {n} is outside 0..256")
    return n


def _positive(value: str) -> int:
    n = _whole_number(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} is not 1 or more")
    return n


def _add_operator(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``emailplan operator``: the control plane."""
    op = sub.add_parser(
        "operator",
        help="run the control plane (kopf operator)",
        description="Watch EmailPlan resources, register plans with the data-plane API, "
        "scale each plan's sender Deployment and keep status counts live.",
    )
    op.add_argument(
        "--namespace",
        action="append",
        default=None,
        help="namespace to watch (repeatable); default: all namespaces",
    )
    op.add_argument(
        "--standalone",
        action="store_true",
        help="run without kopf peering (single replica, local development)",
    )
    op.add_argument(
        "--peering", default=None, help="kopf peering object name for HA (default: from settings)"
    )
    op.add_argument(
        "--liveness",
        default=None,
        metavar="URL",
        help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz",
    )
    op.set_defaults(func=_run("emailplan.operator.main:main"))


def _add_worker(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``emailplan worker``: the sender pod."""
    wk = sub.add_parser(
        "worker",
        help="send one plan's emails (sender pod)",
        description="Long-poll the plan's SQS queue, claim messages in the ledger, render and "
        "send them through SES at the plan's shared rate, record results in batches. "
        "The plan comes from EMAILPLAN_PLAN_ID.",
    )
    wk.add_argument("--plan-id", default=None, help="plan id (overrides EMAILPLAN_PLAN_ID)")
    wk.add_argument(
        "--processes",
        type=_processes,
        default=None,
        metavar="N",
        help="sender processes in this pod, sharing the plan through the ledger (default: "
        "$EMAILPLAN_WORKER_PROCESSES, else the pod's CPU limit rounded up, at most 8; one without "
        "a limit; 0 means that default)",
    )
    wk.set_defaults(func=_run("emailplan.sender.pod:main"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emailplan",
        description="Run bulk email campaigns through AWS SES from Kubernetes.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"emailplan {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    _add_operator(sub)
    _add_worker(sub)

    api = sub.add_parser(
        "api",
        help="serve the events and stats HTTP API",
        description="Serve SNS results, open pixel, click redirects, unsubscribe, statistics, "
        "plan administration, /healthz, /readyz, /metrics, and the OpenAPI document of it all.",
    )
    api.add_argument("--host", default=None, help="listen address (default from settings)")
    api.add_argument("--port", type=int, default=None, help="listen port (default from settings)")
    api.set_defaults(func=_run("emailplan.sender.api.app:main"))

    db = sub.add_parser(
        "db", help="database administration", description="Database administration for the data plane."
    )
    dbsub = db.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)
    up = dbsub.add_parser(
        "upgrade",
        help="apply migrations up to a revision (default: head)",
        description="Apply alembic migrations to EMAILPLAN_DATABASE_URL.",
    )
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=_run("emailplan.sender.migrate:upgrade"))
    _add_admin(sub)
    _add_devsns(sub)
    return parser


def _admin(func: str) -> Callable[[argparse.Namespace], int]:
    def runner(args: argparse.Namespace) -> int:
        from emailplan import admin

        return admin.run(func, args)

    return runner


def _api_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api-url", default=None, help="data-plane API base URL (default: $EMAILPLAN_API_URL)")
    p.add_argument("--api-key", default=None, help="API key (default: $EMAILPLAN_API_KEY; never printed)")


def _add_admin(sub: Any) -> None:
    sup = sub.add_parser(
        "suppressions",
        help="manage the suppression list through the API",
        description="Manage the suppression list (addresses never mailed again).",
    )
    supsub = sup.add_subparsers(dest="suppressions_command", metavar="ACTION", required=True)
    imp = supsub.add_parser(
        "import",
        help="import addresses from a file, with a progress bar",
        description="Import a suppression list: a CSV with an 'email' column, or one address a "
        "line. Sent in batches of 1000; a bad address stops the import with its row number.",
    )
    imp.add_argument("file", metavar="FILE", help="CSV with an email column, or one address a line")
    imp.add_argument("--reason", default="manual", choices=["manual", "bounce", "complaint", "unsubscribe"])
    imp.add_argument("--quiet", action="store_true", help="no progress bar")
    _api_flags(imp)
    imp.set_defaults(func=_admin("import_suppressions"))

    st = sub.add_parser(
        "stats",
        help="show a plan's counts from the API",
        description="Show the counts of one plan (the numbers kubectl get emailplans shows, "
        "plus processing: claimed by a sender pod, not sent yet).",
    )
    _plan_arg(st)
    st.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _api_flags(st)
    st.set_defaults(func=_admin("show_counts"))

    fl = sub.add_parser(
        "failures",
        help="list a plan's failed and suppressed addresses with their reasons",
        description="List the addresses of one plan that were not sent, with the reason (e.g. "
        "'MessageRejected: Email address is not verified'), the full error and when, paged "
        "through the API. csv goes to stdout for piping: emailplan failures mail/spring --format csv > f.csv",
    )
    _plan_arg(fl)
    fl.add_argument(
        "--format", choices=["table", "csv"], default="table", help="output format (default: table)"
    )
    fl.add_argument(
        "--limit", type=_positive, default=None, metavar="N", help="show at most N addresses (default: all)"
    )
    _api_flags(fl)
    fl.set_defaults(func=_admin("show_failures"))


def _add_devsns(sub: Any) -> None:
    """``emailplan sns``: simulated SES events for a local stack (emailplan.devsns)."""
    ev = sub.add_parser(
        "sns",
        help="local stacks only: post simulated SES events for a plan's recipients",
        description="Play SES and the readers for a plan on a local development stack "
        "(EMAILPLAN_DEV_MODE=1; hack/demo.sh --keep prints the settings): delivery, bounce and "
        "complaint are posted to the API as SES events signed like SNS with the stack's "
        "throw-away key; open and click fetch the mail's tracking pixel or link.",
    )
    ev.add_argument("event", choices=["delivery", "bounce", "complaint", "open", "click"])
    ev.add_argument("plan", metavar="PLAN", help="NAMESPACE/NAME of the EmailPlan, or its metadata.uid")
    ev.add_argument("--to", action="append", metavar="EMAIL", help="this recipient (repeatable)")
    ev.add_argument("--count", type=int, default=1, help="the first N recipients (default 1)")
    ev.add_argument("--all", action="store_true", help="every recipient the plan sent to so far")
    ev.add_argument("--api-url", default=None, help="data-plane API (default: $EMAILPLAN_API_URL)")
    ev.add_argument("--ses-url", default=None, help="moto as SES (default: $EMAILPLAN_AWS_ENDPOINT_URL)")
    ev.add_argument("--key-file", default=None, help="SNS signing key (default: $EMAILPLAN_DEV_SNS_KEY_FILE)")
    ev.add_argument("--cert-url", default=None, help="its certificate (default: $EMAILPLAN_DEV_SNS_CERT_URL)")
    ev.set_defaults(func=_run("emailplan.devsns:run"))


def _plan_arg(parser: argparse.ArgumentParser) -> None:
    """The PLAN argument of the admin commands that read one plan."""
    parser.add_argument(
        "plan",
        metavar="PLAN",
        help="NAMESPACE/NAME of the EmailPlan (looked up with KUBECONFIG), or its metadata.uid",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except StartupError as exc:
        print(f"emailplan: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
