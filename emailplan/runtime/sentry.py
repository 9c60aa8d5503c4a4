"""Sentry error reporting, switched on only when a DSN is configured."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def init_sentry(dsn: str | None, *, component: str, integrations: list[Any] | None = None) -> bool:
    """Initialise sentry-sdk when ``dsn`` is set; return whether it was.

    The DSN is a secret: it is never logged, only whether reporting is on.
    """
    if not dsn:
        return False
    import sentry_sdk

    sentry_sdk.init(dsn=dsn, integrations=integrations or [], send_default_pii=False)
    sentry_sdk.set_tag("component", component)
    log.info("sentry reporting enabled", extra={"component": component})
    return True
