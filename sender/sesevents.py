"""Normalise SES event notifications into one small shape.

SES sends two shapes through SNS: event publishing (configuration set →
SNS, top-level ``eventType``) and identity notifications (top-level
``notificationType``, only Bounce, Complaint and Delivery). Both carry the
same ``mail`` object and the same per-kind sub-objects, so one parser
handles both. No I/O here: the event store decides what to write.

Mapping back to our ledger: the SES ``mail.messageId`` (stored when the send
call returned it) is the primary key; our own message id travels as a message
tag and as the ``X-EmailPlan-Message-Id`` header as fallbacks, for events
that arrive before the send result was written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from emailplan.contract import jsonbounds, textcheck

# Tag / header names the worker puts on every message (fallback mapping; see rendering.py).
MESSAGE_ID_TAGS = ("emailplan-message", "emailplan-message-id")
PLAN_ID_TAGS = ("emailplan-plan", "emailplan-plan-id")
MESSAGE_ID_HEADER = "x-emailplan-message-id"
PLAN_ID_HEADER = "x-emailplan-plan-id"

MAX_RECIPIENTS = 1000  # SES caps recipients of one message at 50; anything above is junk


class Kind(StrEnum):
    SEND = "send"
    DELIVERY = "delivery"
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    REJECT = "reject"
    DELIVERY_DELAY = "delivery_delay"
    OPEN = "open"
    CLICK = "click"
    RENDERING_FAILURE = "rendering_failure"
    SUBSCRIPTION = "subscription"


_KINDS = {
    "Send": Kind.SEND,
    "Delivery": Kind.DELIVERY,
    "Bounce": Kind.BOUNCE,
    "Complaint": Kind.COMPLAINT,
    "Reject": Kind.REJECT,
    "DeliveryDelay": Kind.DELIVERY_DELAY,
    "Open": Kind.OPEN,
    "Click": Kind.CLICK,
    "Rendering Failure": Kind.RENDERING_FAILURE,
    "RenderingFailure": Kind.RENDERING_FAILURE,
    "Subscription": Kind.SUBSCRIPTION,
}

# Sub-object holding the details of each kind (event publishing names).
_DETAIL_KEY = {
    Kind.SEND: "send",
    Kind.DELIVERY: "delivery",
    Kind.BOUNCE: "bounce",
    Kind.COMPLAINT: "complaint",
    Kind.REJECT: "reject",
    Kind.DELIVERY_DELAY: "deliveryDelay",
    Kind.OPEN: "open",
    Kind.CLICK: "click",
    Kind.RENDERING_FAILURE: "failure",
    Kind.SUBSCRIPTION: "subscription",
}


class SesEventError(ValueError):
    """The SNS message text is not an SES event we understand."""


@dataclass(frozen=True)
class SesEvent:
    """One SES event, reduced to what the ledger needs."""

    kind: Kind
    ses_message_id: str | None
    message_ref: int | None  # our ledger message id, from tag or header
    plan_ref: str | None
    recipients: tuple[str, ...]
    occurred_at: datetime | None
    bounce_type: str | None = None  # Permanent | Transient | Undetermined
    bounce_subtype: str | None = None
    feedback_type: str | None = None  # complaint feedback (abuse, not-spam, …)
    user_agent: str | None = None
    link: str | None = None
    reason: str | None = None  # reject / rendering failure / delay reason

    @property
    def hard_bounce(self) -> bool:
        """Permanent bounces only: transient and undetermined ones may succeed later."""
        return self.kind is Kind.BOUNCE and self.bounce_type == "Permanent"

    @property
    def soft_bounce(self) -> bool:
        """Transient and undetermined bounces: counted as ``softBounced``, never suppressing."""
        return self.kind is Kind.BOUNCE and not self.hard_bounce

    @property
    def suppresses(self) -> bool:
        """Whether the recipients must never be mailed again (hard bounce, complaint)."""
        return self.hard_bounce or self.kind is Kind.COMPLAINT


def storable_message(text: str) -> str:
    """The ``Message`` string as PostgreSQL can store it, as jsonb and in the columns taken from it.

    jsonb refuses the escape of a NUL or of an unpaired surrogate, and SES quotes text it does
    not control (a remote mail server's bounce diagnostic). Such a message is written again
    from its parsed form with those characters replaced by U+FFFD, so the event is still
    recorded and counted. Any other message is returned as it is, after one scan for those
    escapes.
    """
    if "\\u0000" not in text and "\\ud" not in text and "\\uD" not in text and not textcheck.unstorable(text):
        return text
    try:
        doc = jsonbounds.loads(text)
    except jsonbounds.JsonBoundsError:
        return text  # not JSON: parse_ses_message says so
    return json.dumps(textcheck.storable_value(doc), ensure_ascii=False, separators=(",", ":"))


def parse_ses_message(text: str) -> SesEvent | None:
    """Parse the ``Message`` string of an SNS notification.

    Returns None for SES housekeeping messages we deliberately ignore (e.g.
    ``AmazonSnsSubscriptionSucceeded``); raises :class:`SesEventError` for
    anything that is not an SES event at all.
    """
    try:
        doc = jsonbounds.loads(text)
    except jsonbounds.JsonBoundsError as exc:
        raise SesEventError(f"message is not acceptable JSON: {exc.msg}") from exc
    if not isinstance(doc, dict):
        raise SesEventError("message is not a JSON object")
    return normalise(doc)


def normalise(doc: Mapping[str, Any]) -> SesEvent | None:
    """Turn either SES shape into a :class:`SesEvent`."""
    type_name = doc.get("eventType", doc.get("notificationType"))
    if not isinstance(type_name, str):
        raise SesEventError("neither eventType nor notificationType")
    if type_name == "AmazonSnsSubscriptionSucceeded":
        return None
    kind = _KINDS.get(type_name)
    if kind is None:
        raise SesEventError(f"unknown SES event type {type_name[:40]!r}")
    mail = _obj(doc.get("mail"))
    detail = _obj(doc.get(_DETAIL_KEY[kind]))
    ses_id = _str(mail.get("messageId"))
    tags = _obj(mail.get("tags"))
    headers = _headers(mail.get("headers"))
    message_ref = _int(_first_tag(tags, MESSAGE_ID_TAGS)) or _int(headers.get(MESSAGE_ID_HEADER))
    plan_ref = _str(_first_tag(tags, PLAN_ID_TAGS)) or _str(headers.get(PLAN_ID_HEADER))
    if ses_id is None and message_ref is None:
        raise SesEventError("event names no message")
    occurred = _time(detail.get("timestamp")) or _time(mail.get("timestamp"))
    event = SesEvent(
        kind=kind,
        ses_message_id=ses_id,
        message_ref=message_ref,
        plan_ref=plan_ref,
        recipients=_recipients(kind, detail, mail),
        occurred_at=occurred,
    )
    if kind is Kind.BOUNCE:
        return _replace(
            event,
            bounce_type=_str(detail.get("bounceType")),
            bounce_subtype=_str(detail.get("bounceSubType")),
        )
    if kind is Kind.COMPLAINT:
        return _replace(event, feedback_type=_str(detail.get("complaintFeedbackType")))
    if kind in (Kind.OPEN, Kind.CLICK):
        return _replace(event, user_agent=_str(detail.get("userAgent")), link=_str(detail.get("link")))
    if kind is Kind.REJECT:
        return _replace(event, reason=_str(detail.get("reason")))
    if kind is Kind.RENDERING_FAILURE:
        return _replace(event, reason=_str(detail.get("errorMessage")))
    if kind is Kind.DELIVERY_DELAY:
        return _replace(event, reason=_str(detail.get("delayType")))
    return event


def _replace(event: SesEvent, **changes: Any) -> SesEvent:
    return replace(event, **changes)


def _recipients(kind: Kind, detail: Mapping[str, Any], mail: Mapping[str, Any]) -> tuple[str, ...]:
    """The addresses this event is about (several for one notification when SES says so)."""
    found: list[Any]
    if kind is Kind.BOUNCE:
        found = [_obj(r).get("emailAddress") for r in _list(detail.get("bouncedRecipients"))]
    elif kind is Kind.COMPLAINT:
        found = [_obj(r).get("emailAddress") for r in _list(detail.get("complainedRecipients"))]
    elif kind is Kind.DELIVERY_DELAY:
        found = [_obj(r).get("emailAddress") for r in _list(detail.get("delayedRecipients"))]
    elif kind is Kind.DELIVERY:
        found = _list(detail.get("recipients"))
    else:
        found = []
    if not found:
        found = _list(mail.get("destination"))
    out: list[str] = []
    for item in found[:MAX_RECIPIENTS]:
        addr = _address(item)
        if addr and addr not in out:
            out.append(addr)
    return tuple(out)


def _address(value: Any) -> str | None:
    """A bare lower-cased address from ``a@b`` or ``"Name" <a@b>``."""
    if not isinstance(value, str):
        return None
    addr: str = value.strip()
    if "<" in addr and addr.endswith(">"):
        addr = addr[addr.rindex("<") + 1 : -1]
    addr = addr.strip().lower()
    if "@" not in addr or len(addr) > 320:
        return None
    return addr


def _headers(value: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in _list(value):
        h = _obj(item)
        name, val = h.get("name"), h.get("value")
        if isinstance(name, str) and isinstance(val, str):
            out.setdefault(name.lower(), val)
    return out


def _first_tag(tags: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        values = tags.get(name)
        if isinstance(values, list) and values:
            return values[0]
        if isinstance(values, str):
            return values
    return None


def _obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    if isinstance(value, str) and value.isdigit() and len(value) <= 19:
        n = int(value)
        return n if 0 < n < 2**63 else None
    return None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
