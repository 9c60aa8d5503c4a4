"""Amazon SNS HTTP(S) messages: parsing and signature verification.

The SNS endpoint is public, so everything it records must be proven to come
from SNS: every message's signature is checked against the certificate named
in ``SigningCertURL``, and that URL is only trusted when it is HTTPS, ends in
``.pem`` and its host matches the AWS SNS host pattern (tests add a local
certificate server through an explicit prefix allowlist). The topic is checked
against an allowlist *before* any certificate is fetched, so forged posts cost
one JSON parse and never make us reach out.

This module does no network I/O itself: the certificate cache takes an async
``fetch(url) -> bytes`` callable, which the API supplies from its one shared
aiohttp ClientSession. That keeps the decision logic testable without servers.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import SplitResult, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from emailplan.contract import jsonbounds, textcheck

NOTIFICATION = "Notification"
SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"
MESSAGE_TYPES = (NOTIFICATION, SUBSCRIPTION_CONFIRMATION, UNSUBSCRIBE_CONFIRMATION)

# Keys of the string to sign, in the order AWS documents them (present keys only).
_NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_CONFIRMATION_KEYS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")

_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}

MAX_BODY_BYTES = 256 * 1024  # SNS messages are at most 256 KiB
MAX_CERT_BYTES = 64 * 1024


class SnsError(Exception):
    """A message that must not be trusted; ``reason`` is a short, stable label for metrics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class SnsMessage:
    """The fields of one SNS HTTP message that matter to us (all strings as SNS sends them)."""

    type: str
    message_id: str
    topic_arn: str
    message: str
    timestamp: str
    signature_version: str
    signature: str
    signing_cert_url: str
    subject: str | None = None
    subscribe_url: str | None = None
    token: str | None = None
    unsubscribe_url: str | None = None
    fields: dict[str, str] = field(default_factory=dict, repr=False, compare=False)


def parse_message(body: bytes) -> SnsMessage:
    """Parse the raw POST body (JSON sent as ``text/plain``) into an :class:`SnsMessage`.

    Raises :class:`SnsError` for anything that is not a well-formed SNS message,
    so the caller can answer 400 without further work.
    """
    if len(body) > MAX_BODY_BYTES:
        raise SnsError("too_large", "message larger than 256 KiB")
    try:
        doc = jsonbounds.loads(body)
    except jsonbounds.JsonBoundsError as exc:
        raise SnsError("malformed", f"body is not acceptable JSON: {exc.msg}") from exc
    if not isinstance(doc, dict):
        raise SnsError("malformed", "body is not a JSON object")
    kind = doc.get("Type")
    if kind not in MESSAGE_TYPES:
        raise SnsError("malformed", "unknown or missing Type")
    required = [
        "MessageId",
        "TopicArn",
        "Message",
        "Timestamp",
        "SignatureVersion",
        "Signature",
        "SigningCertURL",
    ]
    if kind != NOTIFICATION:
        required += ["SubscribeURL", "Token"]
    strings: dict[str, str] = {}
    for key, value in doc.items():
        if isinstance(value, str):
            strings[key] = value
    for key in required:
        if key not in strings:
            raise SnsError("malformed", f"missing or non-string field {key}")
    for key, value in strings.items():  # SNS signs UTF-8 text; PostgreSQL holds no NUL
        if textcheck.unstorable(value):
            raise SnsError("malformed", f"field {textcheck.storable(key[:40])}: {textcheck.MESSAGE}")
    # Optional keys that take part in the string to sign must be strings when present.
    for key in ("Subject",):
        if key in doc and doc[key] is not None and key not in strings:
            raise SnsError("malformed", f"non-string field {key}")
    return SnsMessage(
        type=kind,
        message_id=strings["MessageId"],
        topic_arn=strings["TopicArn"],
        message=strings["Message"],
        timestamp=strings["Timestamp"],
        signature_version=strings["SignatureVersion"],
        signature=strings["Signature"],
        signing_cert_url=strings["SigningCertURL"],
        subject=strings.get("Subject"),
        subscribe_url=strings.get("SubscribeURL"),
        token=strings.get("Token"),
        unsubscribe_url=strings.get("UnsubscribeURL"),
        fields=strings,
    )


def string_to_sign(msg: SnsMessage) -> bytes:
    """The canonical text SNS signs: ``Key\\nValue\\n`` for each present key, in AWS order."""
    keys = _NOTIFICATION_KEYS if msg.type == NOTIFICATION else _CONFIRMATION_KEYS
    parts: list[str] = []
    for key in keys:
        value = msg.fields.get(key)
        if value is not None:
            parts.append(f"{key}\n{value}\n")
    return "".join(parts).encode("utf-8")


def check_cert_url(url: str, host_pattern: str | re.Pattern[str], extra_prefixes: Iterable[str] = ()) -> None:
    """Refuse a SigningCertURL we would not fetch a trust anchor from.

    Production: https, a path ending in ``.pem``, and a host matching the SNS
    host pattern (no user info, no explicit port). ``extra_prefixes`` exists
    only so tests can trust a local certificate server explicitly. URLs with
    whitespace or control characters are refused outright: URL parsers strip
    some of them silently, so the URL we checked would not be the one fetched.
    """
    if not _plain_url(url):
        raise SnsError("cert_url", "SigningCertURL contains whitespace or control characters")
    for prefix in extra_prefixes:
        # A prefix must name a whole origin and path ("https://host:port/…/") so that
        # "https://127.0.0.1:1@evil/" style tricks cannot extend it.
        if prefix.startswith("https://") and prefix.endswith("/") and url.startswith(prefix):
            if not urlsplit(url).path.endswith(".pem"):
                raise SnsError("cert_url", "SigningCertURL path must end in .pem")
            return
    parts, port = _split(url, "cert_url", "SigningCertURL")
    if parts.scheme != "https":
        raise SnsError("cert_url", "SigningCertURL must use https")
    if not parts.path.endswith(".pem"):
        raise SnsError("cert_url", "SigningCertURL path must end in .pem")
    if parts.username or parts.password or port is not None:
        raise SnsError("cert_url", "SigningCertURL must not carry credentials or a port")
    pattern = re.compile(host_pattern) if isinstance(host_pattern, str) else host_pattern
    host = parts.hostname or ""
    if not pattern.fullmatch(host):
        raise SnsError("cert_url", "SigningCertURL host is not an SNS host")


def _plain_url(url: str) -> bool:
    return bool(url) and url.isascii() and url.isprintable() and " " not in url


def load_certificate_key(pem: bytes, now: datetime | None = None) -> rsa.RSAPublicKey:
    """The RSA public key of a PEM certificate that is currently valid."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise SnsError("cert", "signing certificate is not a PEM certificate") from exc
    now = now or datetime.now(UTC)
    if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
        raise SnsError("cert", "signing certificate is not valid now")
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise SnsError("cert", "signing certificate does not hold an RSA key")
    return key


Fetcher = Callable[[str], Awaitable[bytes]]


class CertificateCache:
    """Public keys by certificate URL, fetched once and kept (bounded LRU).

    Concurrent requests for the same URL share one fetch. Failures are not
    cached, but a failed URL is not retried for ``failure_backoff`` seconds so
    a burst of messages naming a dead URL cannot turn into a burst of fetches.
    """

    def __init__(
        self, fetch: Fetcher, max_entries: int = 64, ttl: float = 24 * 3600.0, failure_backoff: float = 5.0
    ) -> None:
        self._fetch = fetch
        self._max = max_entries
        self._ttl = ttl
        self._backoff = failure_backoff
        self._keys: OrderedDict[str, tuple[float, rsa.RSAPublicKey]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[rsa.RSAPublicKey]] = {}
        self._failed: dict[str, float] = {}
        self.fetches = 0

    async def get(self, url: str) -> rsa.RSAPublicKey:
        now = time.monotonic()
        hit = self._keys.get(url)
        if hit is not None and now - hit[0] < self._ttl:
            self._keys.move_to_end(url)
            return hit[1]
        failed_at = self._failed.get(url)
        if failed_at is not None and now - failed_at < self._backoff:
            raise SnsError("cert_fetch", "signing certificate could not be fetched")
        pending = self._inflight.get(url)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[rsa.RSAPublicKey] = asyncio.get_running_loop().create_future()
        self._inflight[url] = fut
        try:
            self.fetches += 1
            try:
                pem = await self._fetch(url)
            except SnsError:
                raise
            except Exception as exc:  # any transport failure means "not verifiable"
                raise SnsError("cert_fetch", "signing certificate could not be fetched") from exc
            key = load_certificate_key(pem)
        except BaseException as exc:
            self._failed[url] = time.monotonic()
            if len(self._failed) > 4 * self._max:
                self._failed.clear()
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            self._inflight.pop(url, None)
        self._failed.pop(url, None)
        self._keys[url] = (time.monotonic(), key)
        while len(self._keys) > self._max:
            self._keys.popitem(last=False)
        fut.set_result(key)
        return key


class SnsVerifier:
    """Decides whether an SNS message is authentic and for one of our topics."""

    def __init__(
        self,
        certs: CertificateCache,
        *,
        topic_arns: Iterable[str],
        host_pattern: str,
        extra_cert_prefixes: Iterable[str] = (),
    ) -> None:
        self.certs = certs
        self.topics = frozenset(topic_arns)
        self.host_pattern = re.compile(host_pattern)
        self.extra_prefixes = tuple(p for p in extra_cert_prefixes if p)

    async def verify(self, msg: SnsMessage) -> None:
        """Return when ``msg`` is authentic; raise :class:`SnsError` otherwise.

        Cheap checks come first (topic, versions, URLs) so that forged traffic
        never reaches a certificate fetch.
        """
        if msg.topic_arn not in self.topics:
            raise SnsError("topic", "topic is not allowed")
        algorithm = _HASHES.get(msg.signature_version)
        if algorithm is None:
            raise SnsError("signature_version", "unsupported SignatureVersion")
        check_cert_url(msg.signing_cert_url, self.host_pattern, self.extra_prefixes)
        if msg.type == SUBSCRIPTION_CONFIRMATION and msg.subscribe_url is not None:
            check_subscribe_url(msg.subscribe_url, self.host_pattern, self.extra_prefixes)
        try:
            signature = base64.b64decode(msg.signature, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SnsError("signature", "signature is not base64") from exc
        if not signature or len(signature) > 1024:
            raise SnsError("signature", "signature has an impossible length")
        key = await self.certs.get(msg.signing_cert_url)
        try:
            key.verify(signature, string_to_sign(msg), padding.PKCS1v15(), algorithm())
        except InvalidSignature as exc:
            raise SnsError("signature", "signature does not verify") from exc


def _split(url: str, field: str, name: str) -> tuple[SplitResult, int | None]:
    """``url`` in parts, with its port; one that does not parse is an ``SnsError`` naming it."""
    try:
        parts = urlsplit(url)
        return parts, parts.port
    except ValueError as exc:
        raise SnsError(field, f"{name} is not a valid URL") from exc


def check_subscribe_url(url: str, host_pattern: re.Pattern[str], extra_prefixes: Iterable[str] = ()) -> None:
    """SubscribeURL must point at SNS too: we only ever GET an AWS (or explicitly trusted) host."""
    if not _plain_url(url):
        raise SnsError("subscribe_url", "SubscribeURL contains whitespace or control characters")
    for prefix in extra_prefixes:
        if prefix.startswith("https://") and prefix.endswith("/") and url.startswith(prefix):
            return
    parts, port = _split(url, "subscribe_url", "SubscribeURL")
    if parts.scheme != "https" or parts.username or port is not None:
        raise SnsError("subscribe_url", "SubscribeURL must be a plain https URL")
    if not host_pattern.fullmatch(parts.hostname or ""):
        raise SnsError("subscribe_url", "SubscribeURL host is not an SNS host")
