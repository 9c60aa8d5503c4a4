"""Helpers for the API tests: a test SNS signing identity and SES event builders.

SNS messages are signed here exactly as SNS signs them, with a throw-away RSA
key and a self-signed certificate served by a local HTTPS aiohttp server. The
API under test trusts that server only through the explicit test settings
(``sns_extra_trusted_cert_prefixes`` + ``sns_ca_file``). No tests live here.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import ssl
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from emailplan.sender import sns

TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-events"
OTHER_TOPIC = "arn:aws:sns:us-east-1:123456789012:someone-else"


@dataclass
class Identity:
    key: rsa.RSAPrivateKey
    cert_pem: bytes
    dir: Path

    @property
    def cert_file(self) -> str:
        return str(self.dir / "cert.pem")

    @property
    def key_file(self) -> str:
        return str(self.dir / "key.pem")


def make_identity(common_name: str = "127.0.0.1") -> Identity:
    """RSA key + self-signed certificate valid for 127.0.0.1 (TLS server and SNS signer)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    d = Path(tempfile.mkdtemp(prefix="emailplan-sns-"))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (d / "cert.pem").write_bytes(pem)
    (d / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return Identity(key=key, cert_pem=pem, dir=d)


class CertServer:
    """Local HTTPS server that serves the signing certificate and records SubscribeURL hits."""

    def __init__(self, ident: Identity) -> None:
        self.ident = ident
        self.cert_hits = 0
        self.subscribe_hits: list[str] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def prefix(self) -> str:
        return f"https://127.0.0.1:{self.port}/"

    @property
    def cert_url(self) -> str:
        return f"{self.prefix}SimpleNotificationService-test.pem"

    async def start(self) -> CertServer:
        app = web.Application()

        async def cert(_: web.Request) -> web.Response:
            self.cert_hits += 1
            return web.Response(body=self.ident.cert_pem, content_type="application/x-pem-file")

        async def subscribe(request: web.Request) -> web.Response:
            self.subscribe_hits.append(request.query.get("Token", ""))
            return web.Response(text="<ConfirmSubscriptionResponse/>", content_type="text/xml")

        app.router.add_get("/SimpleNotificationService-test.pem", cert)
        app.router.add_get("/confirm", subscribe)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.ident.cert_file, self.ident.key_file)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def sign(ident: Identity, fields: dict[str, Any], version: str = "1") -> dict[str, Any]:
    """Return ``fields`` with SignatureVersion and Signature set as SNS would."""
    doc = {**fields, "SignatureVersion": version, "Signature": "x"}
    msg = sns.parse_message(json.dumps(doc).encode())
    algo = hashes.SHA1() if version == "1" else hashes.SHA256()
    sig = ident.key.sign(sns.string_to_sign(msg), padding.PKCS1v15(), algo)
    doc["Signature"] = base64.b64encode(sig).decode()
    return doc


def notification(
    ident: Identity,
    cert_url: str,
    message: dict[str, Any] | str,
    *,
    topic: str = TOPIC,
    version: str = "1",
    message_id: str | None = None,
    subject: str | None = None,
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "Type": "Notification",
        "MessageId": message_id or str(uuid.uuid4()),
        "TopicArn": topic,
        "Message": message if isinstance(message, str) else json.dumps(message),
        "Timestamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "SigningCertURL": cert_url,
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
    }
    if subject is not None:
        fields["Subject"] = subject
    return sign(ident, fields, version)


def confirmation(
    ident: Identity,
    cert_url: str,
    subscribe_url: str,
    *,
    topic: str = TOPIC,
    kind: str = "SubscriptionConfirmation",
    version: str = "2",
) -> dict[str, Any]:
    fields = {
        "Type": kind,
        "MessageId": str(uuid.uuid4()),
        "Token": "tok-" + uuid.uuid4().hex,
        "TopicArn": topic,
        "Message": "You have chosen to subscribe to the topic.",
        "SubscribeURL": subscribe_url,
        "Timestamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "SigningCertURL": cert_url,
    }
    return sign(ident, fields, version)


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
        mail["tags"] = {"emailplan-message-id": [str(message_ref)]}
        mail["headers"] = [{"name": "X-EmailPlan-Message-Id", "value": str(message_ref)}]
    doc: dict[str, Any] = {("eventType" if shape == "event" else "notificationType"): kind, "mail": mail}
    if kind == "Bounce":
        doc["bounce"] = {
            "bounceType": bounce_type,
            "bounceSubType": "General",
            "timestamp": now,
            "bouncedRecipients": [{"emailAddress": r} for r in recipients],
        }
    elif kind == "Complaint":
        doc["complaint"] = {
            "complainedRecipients": [{"emailAddress": r} for r in recipients],
            "timestamp": now,
            "complaintFeedbackType": "abuse",
        }
    elif kind == "Delivery":
        doc["delivery"] = {"timestamp": now, "recipients": recipients, "smtpResponse": "250 ok"}
    elif kind == "Open":
        doc["open"] = {"timestamp": now, "userAgent": "Mozilla/5.0", "ipAddress": "192.0.2.1"}
    elif kind == "Click":
        doc["click"] = {"timestamp": now, "link": "https://example.com/", "userAgent": "Mozilla/5.0"}
    elif kind == "Reject":
        doc["reject"] = {"reason": "Bad content"}
    elif kind == "DeliveryDelay":
        doc["deliveryDelay"] = {
            "timestamp": now,
            "delayType": "MailboxFull",
            "delayedRecipients": [{"emailAddress": r} for r in recipients],
        }
    elif kind == "Rendering Failure":
        doc["failure"] = {"errorMessage": "Attribute 'x' is not present", "templateName": "t"}
    elif kind == "Send":
        doc["send"] = {}
    if extra:
        doc.update(extra)
    return doc
