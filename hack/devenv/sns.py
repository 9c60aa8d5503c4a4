"""A local stand-in for SNS's signing: a throw-away key, its certificate over local HTTPS, signed messages.

SNS signs every message with a key whose certificate it serves from an https URL; the API
fetches that certificate and verifies the signature. Here a self-signed RSA key plays SNS's,
a threaded HTTPS server on loopback serves its certificate, and ``notification`` builds
messages signed exactly as SNS signs them. The API trusts this server only through its
explicit test settings (``EMAILPLAN_SNS_EXTRA_TRUSTED_CERT_PREFIXES`` + ``EMAILPLAN_SNS_CA_FILE``,
see ``api_env``). The signing and the SES event shapes live in ``emailplan.devsns`` (the
``emailplan sns`` command uses them too). Used by the API tests, the e2e tests, the benchmarks
and the demo (which simulates SES delivery, bounce and complaint notifications through the real signed path).
"""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import json
import ssl
import threading
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from devenv import reaper
from emailplan import devsns
from emailplan.devsns import ses_event

__all__ = [
    "OTHER_TOPIC",
    "TOPIC",
    "CertServer",
    "Identity",
    "confirmation",
    "make_identity",
    "notification",
    "ses_event",
    "sign",
]

TOPIC = devsns.TOPIC
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
    d = reaper.temp_dir("emailplan-sns-")
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
    """The signing certificate over local HTTPS, in a thread; counts certificate fetches and
    records the ``Token`` of every SubscribeURL visit (``/confirm``)."""

    def __init__(self, ident: Identity) -> None:
        self.ident = ident
        self.cert_hits = 0
        self.subscribe_hits: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                if url.path == "/SimpleNotificationService-test.pem":
                    owner.cert_hits += 1
                    self._answer(owner.ident.cert_pem, "application/x-pem-file")
                elif url.path == "/confirm":
                    owner.subscribe_hits.append(urllib.parse.parse_qs(url.query).get("Token", [""])[0])
                    self._answer(b"<ConfirmSubscriptionResponse/>", "text/xml")
                else:
                    self.send_error(404)

            def _answer(self, body: bytes, ctype: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(ident.cert_file, ident.key_file)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def prefix(self) -> str:
        return f"https://127.0.0.1:{self.port}/"

    @property
    def cert_url(self) -> str:
        return f"{self.prefix}SimpleNotificationService-test.pem"

    def api_env(self, topics: list[str] | None = None) -> dict[str, str]:
        """What ``emailplan api`` needs to accept messages signed by this identity."""
        return {
            "EMAILPLAN_SNS_TOPIC_ARNS": json.dumps(topics or [TOPIC]),
            "EMAILPLAN_SNS_EXTRA_TRUSTED_CERT_PREFIXES": json.dumps([self.prefix]),
            "EMAILPLAN_SNS_CA_FILE": self.ident.cert_file,
        }

    def start(self) -> CertServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def sign(ident: Identity, fields: dict[str, Any], version: str = "1") -> dict[str, Any]:
    """Return ``fields`` with SignatureVersion and Signature set as SNS would."""
    return devsns.sign(ident.key, fields, version)


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
    return devsns.notification(
        ident.key, cert_url, message, topic=topic, version=version, message_id=message_id, subject=subject
    )


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
