"""Simulated SES events for a local development stack: ``emailplan sns`` (EMAILPLAN_DEV_MODE=1 only).

On a laptop there is no SES to report deliveries, bounces and complaints, and no reader
to open the mail. The local stack (``hack/demo.sh --keep``) runs moto as SES and a
stand-in for SNS's signing key, whose certificate the API trusts through its explicit
development settings. This module plays SES and the readers for one plan's mail: it
finds the messages moto accepted for the plan (``X-EmailPlan-Plan-Id``), posts SES
Delivery, Bounce and Complaint events to the API wrapped and signed exactly as SNS
signs them, and fetches the tracking pixel or the tracked link for opens and clicks.
So the plan's status moves through the same paths production uses.

The demo's simulated readers (hack/demo.py) and the test helpers (hack/devenv/sns.py)
build their messages with the same functions. The signing key is a throw-away file the
local stack writes; nothing here works without ``EMAILPLAN_DEV_MODE=1``.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import email
import email.message
import email.policy
import email.utils
import html as htmlmod
import json
import os
import re
import sys
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import TypeAdapter, ValidationError

from emailplan.contract.httpapi import CLICK, OPEN_PIXEL, SNS_RESULT
from emailplan.runtime.startup import DEV_MODE_ENV
from emailplan.sender import sns
from emailplan.sender.sesevents import PLAN_ID_HEADER

TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-events"  # the topic the local API accepts
KEY_FILE_ENV = "EMAILPLAN_DEV_SNS_KEY_FILE"  # the local SNS stand-in's private key (PEM)
CERT_URL_ENV = "EMAILPLAN_DEV_SNS_CERT_URL"  # where the API fetches its certificate
SES_URL_ENV = "EMAILPLAN_AWS_ENDPOINT_URL"  # moto, as SES, for the mail it accepted
PIXEL = re.compile(r'src="(https?://[^"]*' + re.escape(OPEN_PIXEL.url()) + r'\?requestId=[^"]+)"')
LINK = re.compile(r'href="(https?://[^"]*' + re.escape(CLICK.url()) + r'\?[^"]+)"')
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"


class DevSnsError(Exception):
    """A problem to show in one line (exit code 1)."""


class Event(StrEnum):
    """What ``emailplan sns`` can make happen to a message."""

    DELIVERY = "delivery"
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    OPEN = "open"
    CLICK = "click"


SES_KIND = {Event.DELIVERY: "Delivery", Event.BOUNCE: "Bounce", Event.COMPLAINT: "Complaint"}


# --- SNS messages, signed as SNS signs them ----------------------------------------------------------


def sign(key: rsa.RSAPrivateKey, fields: dict[str, Any], version: str = "1") -> dict[str, Any]:
    """Return ``fields`` with SignatureVersion and Signature set as SNS would."""
    doc = {**fields, "SignatureVersion": version, "Signature": "x"}
    msg = sns.parse_message(json.dumps(doc).encode())
    algo = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303 - SNS's version 1 is SHA1
    sig = key.sign(sns.string_to_sign(msg), padding.PKCS1v15(), algo)
    doc["Signature"] = base64.b64encode(sig).decode()
    return doc


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def notification(
    key: rsa.RSAPrivateKey,
    cert_url: str,
    message: dict[str, Any] | str,
    *,
    topic: str = TOPIC,
    version: str = "1",
    message_id: str | None = None,
    subject: str | None = None,
) -> dict[str, Any]:
    """An SNS Notification carrying ``message``, signed with ``key``."""
    fields: dict[str, Any] = {
        "Type": "Notification",
        "MessageId": message_id or str(uuid.uuid4()),
        "TopicArn": topic,
        "Message": message if isinstance(message, str) else json.dumps(message),
        "Timestamp": now_iso(),
        "SigningCertURL": cert_url,
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
    }
    if subject is not None:
        fields["Subject"] = subject
    return sign(key, fields, version)


def ses_event(
    kind: str,
    ses_id: str,
    recipients: list[str],
    *,
    shape: str = "event",
    message_ref: int | None = None,
    bounce_type: str = "Permanent",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An SES event in the event-publishing (``eventType``) or notification shape."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    mail: dict[str, Any] = {
        "timestamp": now,
        "messageId": ses_id,
        "source": "news@example.com",
        "destination": recipients,
        "headersTruncated": False,
        "headers": [],
    }
    if message_ref is not None:
        mail["tags"] = {"emailplan-message": [str(message_ref)]}
        mail["headers"] = [{"name": "X-EmailPlan-Message-Id", "value": str(message_ref)}]
    doc: dict[str, Any] = {("eventType" if shape == "event" else "notificationType"): kind, "mail": mail}
    doc.update(_details(kind, now, recipients, bounce_type))
    if extra:
        doc.update(extra)
    return doc


def _details(kind: str, now: str, recipients: list[str], bounce_type: str) -> dict[str, Any]:
    """The per-kind object SES adds next to ``mail``."""
    listed = [{"emailAddress": r} for r in recipients]
    details: dict[str, dict[str, Any]] = {
        "Bounce": {
            "bounce": {
                "bounceType": bounce_type,
                "bounceSubType": "General",
                "timestamp": now,
                "bouncedRecipients": listed,
            }
        },
        "Complaint": {
            "complaint": {"complainedRecipients": listed, "timestamp": now, "complaintFeedbackType": "abuse"}
        },
        "Delivery": {"delivery": {"timestamp": now, "recipients": recipients, "smtpResponse": "250 ok"}},
        "Open": {"open": {"timestamp": now, "userAgent": "Mozilla/5.0", "ipAddress": "192.0.2.1"}},
        "Click": {"click": {"timestamp": now, "link": "https://example.com/", "userAgent": "Mozilla/5.0"}},
        "Reject": {"reject": {"reason": "Bad content"}},
        "DeliveryDelay": {
            "deliveryDelay": {"timestamp": now, "delayType": "MailboxFull", "delayedRecipients": listed}
        },
        "Rendering Failure": {
            "failure": {"errorMessage": "Attribute 'x' is not present", "templateName": "t"}
        },
        "Send": {"send": {}},
    }
    return details.get(kind, {})


# --- the mail SES (moto) accepted --------------------------------------------------------------------


@dataclass(frozen=True)
class SentMail:
    """One message as the recipient's mailbox sees it."""

    address: str
    ses_id: str
    message_ref: int | None  # the ledger's message id (X-EmailPlan-Message-Id)
    plan_id: str
    message: email.message.EmailMessage

    @property
    def html(self) -> str:
        body = self.message.get_body(preferencelist=("html",))
        return str(body.get_content()) if body is not None else ""

    @property
    def pixel(self) -> str | None:
        found = PIXEL.search(self.html)
        return htmlmod.unescape(found.group(1)) if found else None

    @property
    def link(self) -> str | None:
        found = LINK.search(self.html)
        return htmlmod.unescape(found.group(1)) if found else None


def parse_sent(item: dict[str, Any]) -> SentMail | None:
    """One message of moto's store (raw sends), or None for what is not a raw message."""
    raw = item.get("raw_data")
    if not raw:
        return None
    msg = email.message_from_string(str(raw), policy=email.policy.default)
    address = email.utils.parseaddr(str(msg.get("To", "")))[1].lower()
    if not address or not isinstance(msg, email.message.EmailMessage):
        return None
    ref = str(msg.get("X-EmailPlan-Message-Id", "")).strip()
    return SentMail(
        address=address,
        ses_id=str(item.get("id") or ""),
        message_ref=int(ref) if ref.isdigit() else None,
        plan_id=str(msg.get(PLAN_ID_HEADER, "")).strip(),
        message=msg,
    )


def sent_mail(ses_url: str) -> list[SentMail]:
    """Every raw message moto (as SES) accepted, oldest first."""
    return sent_mail_since(ses_url, 0)[0]


def sent_mail_since(ses_url: str, start: int) -> tuple[list[SentMail], int]:
    """The messages moto (as SES) accepted from the ``start``-th on, and how many it holds.

    moto keeps them in the order it accepted them, so a reader that comes back every second
    parses only the new ones: parsing all of them every time (a few thousand) took longer
    than the second, and a simulated reader fell further behind the more mail was sent.
    """
    url = ses_url.rstrip("/") + "/moto-api/data.json"
    try:
        with urllib.request.urlopen(url, timeout=30) as r:  # noqa: S310 - a local development URL
            data = json.load(r)
    except (OSError, ValueError) as exc:
        raise DevSnsError(
            f"cannot read the mail SES accepted from {url} ({exc}); is {SES_URL_ENV} the local "
            "stack's moto URL (hack/demo.sh --keep prints it)?"
        ) from None
    stored = data.get("ses", {}).get("RawMessage") or []
    if isinstance(stored, dict):  # older moto versions keyed the messages by region or id
        stored = [m for v in stored.values() for m in (v if isinstance(v, list) else [v])]
    if start > len(stored):  # the store was emptied (moto reset): read it from the beginning
        start = 0
    return [m for m in (parse_sent(item) for item in stored[start:]) if m is not None], len(stored)


# --- acting on it --------------------------------------------------------------------------------


def post_notification(api_url: str, doc: dict[str, Any]) -> None:
    """POST one SNS message to the API's result endpoint, as SNS does."""
    req = urllib.request.Request(  # noqa: S310 - a local development URL
        api_url.rstrip("/") + SNS_RESULT.url(),
        data=json.dumps(doc).encode(),
        headers={"Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": "Notification"},
        method=SNS_RESULT.method,
    )
    with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310
        r.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def visit(url: str) -> None:
    """Fetch a tracking URL as a mail client does; a click's redirect (outside) is not followed."""
    req = urllib.request.Request(url, headers={"User-Agent": BROWSER})  # noqa: S310
    try:
        urllib.request.build_opener(_NoRedirect).open(req, timeout=10).close()
    except urllib.error.HTTPError as exc:
        if exc.code != 302:
            raise


@dataclass(frozen=True)
class Signer:
    """The local SNS stand-in's key and the certificate URL the API fetches to check it."""

    key: rsa.RSAPrivateKey
    cert_url: str

    @classmethod
    def from_files(cls, key_file: str, cert_url: str) -> Signer:
        key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise DevSnsError(f"{KEY_FILE_ENV}: {key_file} does not hold an RSA private key")
        return cls(key, cert_url)

    def ses(self, api_url: str, kind: str, mail: SentMail) -> None:
        event = ses_event(kind, mail.ses_id, [mail.address], message_ref=mail.message_ref)
        post_notification(api_url, notification(self.key, self.cert_url, event))


def dev_mode() -> bool:
    try:
        return TypeAdapter(bool).validate_python(os.environ.get(DEV_MODE_ENV) or "0")
    except ValidationError:
        return False


# --- the command ---------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """``emailplan sns EVENT PLAN``: one line on failure, exit code 1."""
    from emailplan.admin import AdminError

    try:
        return post_events(args)
    except (DevSnsError, AdminError) as exc:
        print(f"emailplan: error: {exc}", file=sys.stderr)
        return 1


def _setting(value: str | None, env: str, flag: str, what: str) -> str:
    found = value or os.environ.get(env) or ""
    if not found:
        raise DevSnsError(f"no {what}: set {env} or pass {flag} (hack/demo.sh --keep prints it)")
    return found


def post_events(args: argparse.Namespace) -> int:
    from emailplan.admin import resolve_plan

    if not dev_mode():
        raise DevSnsError(
            f"emailplan sns plays SES with a local stack's throw-away signing key; set {DEV_MODE_ENV}=1 "
            "(local development stacks only)"
        )
    event = Event(args.event)
    api_url = _setting(args.api_url, "EMAILPLAN_API_URL", "--api-url", "API URL")
    ses_url = _setting(args.ses_url, SES_URL_ENV, "--ses-url", "SES stand-in (moto) URL")
    signer = None
    if event in SES_KIND:
        key_file = _setting(args.key_file, KEY_FILE_ENV, "--key-file", "SNS signing key file")
        cert_url = _setting(args.cert_url, CERT_URL_ENV, "--cert-url", "SNS certificate URL")
        try:
            signer = Signer.from_files(key_file, cert_url)
        except (OSError, ValueError) as exc:
            raise DevSnsError(f"{KEY_FILE_ENV}: cannot read the key in {key_file} ({exc})") from None
    plan_id = resolve_plan(str(args.plan))
    mails = [m for m in sent_mail(ses_url) if m.plan_id == plan_id]
    if not mails:
        raise DevSnsError(
            f"SES ({ses_url}) holds no mail of plan {args.plan} yet; events can only follow sent mail "
            "(kubectl get emailplans -o wide shows what was sent)"
        )
    chosen = choose(mails, list(args.to or []), None if args.all else int(args.count))
    for mail in chosen:
        act(event, mail, api_url, signer)
    shown = ", ".join(m.address for m in chosen[:5]) + (
        f" and {len(chosen) - 5} more" if len(chosen) > 5 else ""
    )
    print(f"{event.value}: {len(chosen)} recipient(s) of plan {args.plan}: {shown}")
    print(f"the plan's status shows it within seconds: emailplan stats {args.plan}")
    return 0


def choose(mails: list[SentMail], to: list[str], count: int | None) -> list[SentMail]:
    """The messages to act on: those to ``to`` (each must exist), else the first ``count`` (None: all)."""
    if to:
        by_address = {m.address: m for m in mails}
        missing = [a for a in to if a.lower() not in by_address]
        if missing:
            raise DevSnsError(f"--to: the plan sent no mail to {', '.join(missing)}")
        return [by_address[a.lower()] for a in to]
    if count is not None and count < 1:
        raise DevSnsError(f"--count must be at least 1, got {count}")
    return mails if count is None else mails[:count]


def act(event: Event, mail: SentMail, api_url: str, signer: Signer | None) -> None:
    """One event for one message: a signed SES notification, or the reader's pixel or click."""
    try:
        if event in SES_KIND:
            assert signer is not None
            signer.ses(api_url, SES_KIND[event], mail)
            return
        url = mail.pixel if event is Event.OPEN else mail.link
        if url is None:
            what = "a tracking pixel (spec.tracking.opens)" if event is Event.OPEN else "a tracked link"
            raise DevSnsError(f"the mail to {mail.address} has no {what}: nothing to {event.value}")
        visit(url)
    except urllib.error.HTTPError as exc:
        raise DevSnsError(
            f"the API answered {exc.code} ({exc.reason}) to the {event.value} of {mail.address}; "
            f"for SES events check that {CERT_URL_ENV} and {KEY_FILE_ENV} are the running stack's"
        ) from None
    except urllib.error.URLError as exc:
        raise DevSnsError(
            f"cannot reach the API at {api_url} ({exc.reason}); check EMAILPLAN_API_URL"
        ) from None
