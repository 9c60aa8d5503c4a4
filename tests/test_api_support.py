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
        mail["tags"] = {"emailplan-message": [str(message_ref)]}
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


# --------------------------------------------------------------------------- live API fixtures

API_KEY = "test-api-key-0123456789"
TOKEN_KEY = "test-token-key-0123456789"
HEADERS = {"x-api-key": API_KEY}


class NullQueue:
    """A work queue that accepts everything (the ledger's QueueSink) for tests without SQS."""

    def __init__(self) -> None:
        self.enqueued: list[list[int]] = []

    async def enqueue(self, plan_id: uuid.UUID, batches: Any) -> None:
        self.enqueued.extend(list(b) for b in batches)

    async def purge(self, plan_id: uuid.UUID) -> None:
        return None


@dataclass
class LiveApi:
    """A real API server on loopback with a real database, plus what tests need around it."""

    client: Any  # aiohttp.test_utils.TestClient
    settings: Any
    engine: Any
    certs: CertServer
    ident: Identity

    def token(self, purpose: str, message_id: int, extra: str = "") -> str:
        from emailplan.sender.tokens import make_token

        return make_token(TOKEN_KEY.encode(), purpose, message_id, extra)

    async def post_sns(self, doc: dict[str, Any] | bytes | str, **headers: str) -> Any:
        body = doc if isinstance(doc, bytes | str) else json.dumps(doc)
        return await self.client.post(
            "/v1/events/result", data=body, headers={"Content-Type": "text/plain; charset=UTF-8", **headers}
        )

    async def counts(self, plan_id: uuid.UUID) -> dict[str, int]:
        resp = await self.client.get(f"/v1/results/count/{plan_id}", headers=HEADERS)
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())

    async def scalar(self, sql: str, **params: Any) -> Any:
        from sqlalchemy import text

        async with self.engine.connect() as conn:
            return (await conn.execute(text(sql), params)).scalar()


async def start_api(database_url: str, ident: Identity, **overrides: Any) -> LiveApi:
    from aiohttp.test_utils import TestClient, TestServer

    from emailplan.sender.api.app import create_app
    from emailplan.sender.db import make_engine
    from emailplan.sender.settings import SenderSettings

    with_aws = bool(overrides.pop("with_aws", False))
    certs = await CertServer(ident).start()
    values: dict[str, Any] = {
        "database_url": database_url,
        "token_key": TOKEN_KEY,
        "api_key": API_KEY,
        "sns_topic_arns": [TOPIC],
        "sns_extra_trusted_cert_prefixes": [certs.prefix],
        "sns_ca_file": ident.cert_file,
        "open_flush_seconds": 0.2,
        "db_pool_size": 5,
        **overrides,
    }
    settings = SenderSettings(**values)
    engine = make_engine(settings)
    app = create_app(settings, engine=engine, with_aws=with_aws)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return LiveApi(client=client, settings=settings, engine=engine, certs=certs, ident=ident)


async def stop_api(api: LiveApi) -> None:
    await api.client.close()
    await api.engine.dispose()
    await api.certs.stop()


async def make_plan(
    api: LiveApi, emails: list[str], *, send: bool = True, sent_ago_seconds: float = 3600.0
) -> tuple[uuid.UUID, dict[str, int], dict[str, str]]:
    """A plan with recipients through the ledger; when ``send``, every message is recorded as sent.

    Returns (plan id, {email: message id}, {email: SES message id}).
    """
    from sqlalchemy import text

    from emailplan.sender import ledger

    plan_id = uuid.uuid4()
    await ledger.upsert_plan(
        api.engine,
        plan_id,
        name="p",
        namespace="ns",
        spec={"from": "a@example.com", "subject": "s", "text": "t"},
    )
    rows = [(i + 1, {"email": e}) for i, e in enumerate(emails)]
    result = await ledger.insert_recipients(api.engine, plan_id, rows)
    assert result.accepted == len(emails), result
    async with api.engine.connect() as conn:
        ids = {
            r[1]: int(r[0])
            for r in (
                await conn.execute(text("SELECT id, email FROM messages WHERE plan_id = :p"), {"p": plan_id})
            ).all()
        }
    ses_ids: dict[str, str] = {}
    if send:
        await ledger.complete_recipients(api.engine, plan_id, NullQueue())
        claimed = await ledger.claim(api.engine, plan_id, list(ids.values()), "test", 60)
        assert len(claimed) == len(ids)
        ses_ids = {e: f"ses-{uuid.uuid4().hex}" for e in ids}
        await ledger.record_results(
            api.engine,
            plan_id,
            [ledger.SendResult(id=mid, status="sent", ses_message_id=ses_ids[e]) for e, mid in ids.items()],
        )
        async with api.engine.begin() as conn:
            await conn.execute(
                text("UPDATE messages SET sent_at = now() - make_interval(secs => :s) WHERE plan_id = :p"),
                {"s": sent_ago_seconds, "p": plan_id},
            )
    return plan_id, ids, ses_ids
