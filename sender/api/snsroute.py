"""``POST /v1/events/result``: the SNS endpoint for SES events.

Order of work: parse (400 for junk), verify topic + certificate URL +
signature (403 when not provably from SNS), then act. Only verified messages
from allowed topics ever cause an outgoing request (the SubscribeURL GET)
or a database write. SES events are recorded once per SNS MessageId, so SNS
retries and replays change nothing. Answers 5xx only when the fault is ours
(database unreachable), so SNS retries later.
"""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import web

from emailplan.sender import sns
from emailplan.sender.api import metrics
from emailplan.sender.api.errors import ApiError, read_body
from emailplan.sender.api.state import ApiState, state_of
from emailplan.sender.sesevents import SesEventError, parse_ses_message, storable_message
from emailplan.sender.store import eventstore

log = logging.getLogger(__name__)


async def fetch_certificate(http: aiohttp.ClientSession, url: str) -> bytes:
    """GET a signing certificate through the app's one session (size-limited, short timeout)."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with http.get(url, timeout=timeout, allow_redirects=False) as resp:
        if resp.status != 200:
            raise sns.SnsError("cert_fetch", f"certificate URL answered HTTP {resp.status}")
        body = await resp.content.read(sns.MAX_CERT_BYTES + 1)
        if len(body) > sns.MAX_CERT_BYTES:
            raise sns.SnsError("cert_fetch", "certificate too large")
        return body


async def sns_result(request: web.Request) -> web.Response:
    state = state_of(request)
    try:
        body = await read_body(request, sns.MAX_BODY_BYTES)
    except ApiError:
        metrics.sns_outcome("too_large").inc()
        raise
    try:
        msg = sns.parse_message(body)
        header_type = request.headers.get("x-amz-sns-message-type")
        if header_type is not None and header_type != msg.type:
            raise sns.SnsError("malformed", "x-amz-sns-message-type does not match the body")
    except sns.SnsError as exc:
        metrics.sns_outcome(exc.reason).inc()
        raise ApiError(400, exc.message, "body") from exc
    try:
        await state.verifier.verify(msg)
    except sns.SnsError as exc:
        metrics.sns_outcome(exc.reason).inc()
        log.warning(
            "refused SNS message", extra={"reason": exc.reason, "sns_message_id": msg.message_id[:100]}
        )
        raise ApiError(403, f"message refused: {exc.message}") from exc
    if msg.type == sns.SUBSCRIPTION_CONFIRMATION:
        return await _confirm(state, msg)
    if msg.type == sns.UNSUBSCRIBE_CONFIRMATION:
        metrics.sns_outcome("unsubscribe_confirmation").inc()
        log.warning("SNS subscription removed", extra={"topic": msg.topic_arn})
        return web.json_response({"status": "acknowledged"})
    return await _notification(state, msg)


async def _confirm(state: ApiState, msg: sns.SnsMessage) -> web.Response:
    assert msg.subscribe_url is not None  # parse_message requires it for confirmations
    try:
        async with state.http.get(
            msg.subscribe_url, timeout=aiohttp.ClientTimeout(total=15), allow_redirects=False
        ) as resp:
            ok = resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        ok = False
    if not ok:
        metrics.sns_outcome("confirm_failed").inc()
        raise ApiError(502, "could not confirm the subscription; SNS will retry")
    metrics.sns_outcome("subscription_confirmed").inc()
    log.info("SNS subscription confirmed", extra={"topic": msg.topic_arn})
    return web.json_response({"status": "confirmed"})


async def _notification(state: ApiState, msg: sns.SnsMessage) -> web.Response:
    payload = storable_message(msg.message)
    try:
        event = parse_ses_message(payload)
    except SesEventError as exc:
        # Authentic but not an SES event: acknowledge so SNS stops retrying it.
        metrics.sns_outcome("not_ses").inc()
        log.warning(
            "ignored SNS notification", extra={"reason": str(exc), "sns_message_id": msg.message_id[:100]}
        )
        return web.json_response({"status": "ignored"})
    if event is None:
        metrics.sns_outcome("ignored").inc()
        return web.json_response({"status": "ignored"})
    try:
        result = await state.events.record(eventstore.SesRecord(msg.message_id, event, payload))
    except Exception as exc:
        metrics.sns_outcome("db_error").inc()
        log.exception("recording an SES event failed", extra={"sns_message_id": msg.message_id[:100]})
        raise ApiError(503, "event not recorded; SNS will retry") from exc
    metrics.sns_outcome("duplicate" if result.duplicate else "recorded").inc()
    metrics.ses_event(event.kind.value, result.duplicate).inc()
    return web.json_response({"status": "duplicate" if result.duplicate else "recorded"})
