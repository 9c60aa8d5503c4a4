"""Public tracking endpoints: open pixel, click redirect, RFC 8058 unsubscribe.

They take no API key, so they must be unforgeable and cheap: each request
checks one HMAC token (``emailplan.sender.tokens``) before anything else,
and a forged or malformed token never reaches the database. The pixel
answers the same image whatever happens, so a mail client never shows a
broken image and an attacker learns nothing from it.
"""

from __future__ import annotations

import base64
import html
import logging
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

from aiohttp import web

from emailplan.contract.httpapi import UNSUBSCRIBE
from emailplan.sender.api import metrics
from emailplan.sender.api.agents import is_machine_agent
from emailplan.sender.api.errors import ApiError, read_body
from emailplan.sender.api.state import state_of
from emailplan.sender.store import eventstore
from emailplan.sender.tokens import read_token

log = logging.getLogger(__name__)

GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
PIXEL_HEADERS = {
    "Content-Type": "image/gif",
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0, private",
    "Pragma": "no-cache",
    "Expires": "0",
}
NO_STORE = {"Cache-Control": "no-store"}


async def open_pixel(request: web.Request) -> web.Response:
    """``GET /v1/events/open?requestId=<token>``: always the 1x1 GIF; valid tokens count an open."""
    state = state_of(request)
    message_id = read_token(state.token_key, "open", request.query.get("requestId", ""))
    if message_id is not None:
        metrics.PIXEL_VALID.inc()
        state.opens.add(message_id, is_machine_agent(request.headers.get("User-Agent")))
    else:
        metrics.PIXEL_INVALID.inc()
    return web.Response(body=GIF, headers=PIXEL_HEADERS)


async def click(request: web.Request) -> web.Response:
    """``GET /v1/events/click?t=<token>&u=<url>``: 302 only to the URL the token was signed for."""
    state = state_of(request)
    token = request.query.get("t", "")
    url = request.query.get("u", "")
    if not url:
        metrics.CLICKS.labels(result="invalid").inc()
        raise ApiError(400, "missing target URL", "u")
    message_id = read_token(state.token_key, "click", token, extra=url)
    parts = urlsplit(url)
    if message_id is None or parts.scheme not in ("http", "https") or not parts.netloc:
        metrics.CLICKS.labels(result="invalid").inc()
        raise ApiError(400, "invalid or expired link", "t")
    metrics.CLICKS.labels(result="valid").inc()
    try:
        await eventstore.record_click(state.engine, message_id, datetime.now(UTC))
    except Exception:
        # The reader still gets to the page; a lost click is better than a dead link.
        log.exception("recording a click failed", extra={"message_id": message_id})
    raise web.HTTPFound(url, headers=NO_STORE)


def _unsub_id(request: web.Request) -> int:
    message_id = read_token(state_of(request).token_key, "unsub", request.query.get("t", ""))
    if message_id is None:
        metrics.UNSUBSCRIBES.labels(result="invalid").inc()
        raise ApiError(400, "invalid or expired unsubscribe link", "t")
    return message_id


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="robots" content="noindex"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#222}}
button{{font-size:1rem;padding:.6rem 1.2rem;border-radius:.4rem;border:1px solid #555;
background:#222;color:#fff;cursor:pointer}}</style></head>
<body><h1>{title}</h1>{body}</body></html>
"""


def _page(title: str, body: str, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        text=_PAGE.format(title=html.escape(title), body=body),
        content_type="text/html",
        headers={**NO_STORE, "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"},
    )


async def unsubscribe_page(request: web.Request) -> web.Response:
    """``GET /v1/unsubscribe?t=``: a confirmation page (link scanners must not unsubscribe anyone)."""
    _unsub_id(request)
    action = html.escape(f"{UNSUBSCRIBE.url()}?t={request.query.get('t', '')}", quote=True)
    body = (
        "<p>Do you want to stop receiving these emails?</p>"
        f'<form method="post" action="{action}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
    )
    return _page("Unsubscribe", body)


async def unsubscribe(request: web.Request) -> web.Response:
    """``POST /v1/unsubscribe?t=`` with ``List-Unsubscribe=One-Click``: suppress at once (RFC 8058)."""
    message_id = _unsub_id(request)
    raw = await read_body(request, 4096)
    try:
        form = parse_qs(raw.decode("utf-8"), strict_parsing=False)
    except UnicodeDecodeError as exc:
        raise ApiError(400, "body must be form-encoded", "List-Unsubscribe") from exc
    if form.get("List-Unsubscribe") != ["One-Click"]:
        raise ApiError(400, "body must be List-Unsubscribe=One-Click", "List-Unsubscribe")
    state = state_of(request)
    try:
        first = await eventstore.record_unsubscribe(state.engine, message_id, datetime.now(UTC))
    except Exception as exc:
        log.exception("recording an unsubscribe failed", extra={"message_id": message_id})
        raise ApiError(503, "try again in a minute") from exc
    if first is None:
        metrics.UNSUBSCRIBES.labels(result="unknown").inc()
        raise ApiError(404, "this message is no longer known", "t")
    metrics.UNSUBSCRIBES.labels(result="new" if first else "repeat").inc()
    if "text/html" in request.headers.get("Accept", ""):
        return _page("Unsubscribed", "<p>You will not receive these emails any more.</p>")
    return web.json_response({"unsubscribed": True}, headers=NO_STORE)
