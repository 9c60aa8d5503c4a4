"""``emailplan operator``: set up logging, Sentry and metrics, then run kopf.

Peering (two replicas, one active) is kopf's: unless ``--standalone``, the
replicas find each other through the peering object and the one with the
higher (random) priority works while the other waits.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

import kopf

from emailplan.operator.settings import OperatorSettings
from emailplan.runtime.logsetup import setup_logging
from emailplan.runtime.metrics import serve_metrics
from emailplan.runtime.sentry import init_sentry

log = logging.getLogger("emailplan.operator")

# kopf attaches these to every record it logs; as JSON they are noise (a settings dump per line).
_KOPF_EXTRAS = ("settings", "k8s_skip", "k8s_ref")


class _DropKopfExtras(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key in _KOPF_EXTRAS:
            record.__dict__.pop(key, None)
        return True


def kubernetes_problem() -> str | None:
    """Why the Kubernetes API cannot be used as configured (one line, with the fix), or None.

    kopf would retry a bad configuration forever with a traceback each time; a process
    that cannot reach its cluster is better off exiting, so the pod's restart count and
    this one line say what is wrong.
    """
    import kubernetes
    from kubernetes.client.exceptions import ApiException

    from emailplan.operator.kubeapi import load_config

    where = f"KUBECONFIG={os.environ.get('KUBECONFIG') or '~/.kube/config'}"
    try:
        load_config()
    except Exception as exc:  # noqa: BLE001 - the client raises many types for a bad config
        return (
            f"no usable Kubernetes configuration ({where}): {_first_line(exc)}; "
            "point KUBECONFIG at a valid kubeconfig, or run in a pod with a service account"
        )
    host = kubernetes.client.Configuration.get_default_copy().host
    try:
        with warnings.catch_warnings():  # an insecure-skip-tls-verify kubeconfig: the check stays one line
            warnings.simplefilter("ignore")
            kubernetes.client.VersionApi().get_code(_request_timeout=15)
    except ApiException as exc:
        return (
            f"the Kubernetes API at {host} refused the credentials ({exc.status} {exc.reason}); "
            f"fix the user in {where} or the pod's service account"
        )
    except Exception as exc:  # noqa: BLE001 - urllib3, ssl and socket errors alike
        return f"cannot reach the Kubernetes API at {host} ({_first_line(exc)}); check the server in {where}"
    return None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


def main(args: argparse.Namespace) -> int:
    settings = OperatorSettings()
    problem = kubernetes_problem()
    if problem:
        print(f"emailplan: error: {problem}", file=sys.stderr)
        return 1
    setup_logging()
    for handler in logging.getLogger().handlers:
        handler.addFilter(_DropKopfExtras())
    # kopf logs every successful handler call at INFO; our own loggers say what matters.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    dsn = settings.sentry_dsn.get_secret_value() if settings.sentry_dsn else None
    init_sentry(dsn, component="operator")
    serve_metrics(settings.metrics_port)

    import emailplan.operator.handlers  # noqa: F401 - registers the kopf handlers

    namespaces = list(getattr(args, "namespace", None) or [])
    standalone = bool(getattr(args, "standalone", False))
    peering = getattr(args, "peering", None) or settings.peering
    log.info(
        "operator starting",
        extra={"namespaces": namespaces or "all", "standalone": standalone, "api_url": settings.api_url},
    )
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=standalone or None,
        peering_name=None if standalone else peering,
        memo=kopf.Memo(settings=settings),
        priority=settings.priority,
        liveness_endpoint=getattr(args, "liveness", None),
    )
    return 0
