"""``emailplan operator``: set up logging, Sentry and metrics, then run kopf.

Peering (two replicas, one active) is kopf's: unless ``--standalone``, the
replicas find each other through the peering object and the one with the
higher (random) priority works while the other waits.
"""

from __future__ import annotations

import argparse
import logging

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


def main(args: argparse.Namespace) -> int:
    settings = OperatorSettings()
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
