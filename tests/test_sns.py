"""SNS message parsing and signature verification, without servers (certificates come from a fake fetch)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from support.api import OTHER_TOPIC, TOPIC, Identity, confirmation, make_identity, notification

from emailplan.sender import sns
from emailplan.sender.settings import SenderSettings

CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem"
PROD_PATTERN = SenderSettings().sns_cert_host_pattern


@pytest.fixture(scope="module")
def ident() -> Identity:
    return make_identity()


def verifier(ident: Identity, fetched: list[str] | None = None) -> sns.SnsVerifier:
    async def fetch(url: str) -> bytes:
        if fetched is not None:
            fetched.append(url)
        return ident.cert_pem

    return sns.SnsVerifier(sns.CertificateCache(fetch), topic_arns=[TOPIC], host_pattern=PROD_PATTERN)


def parse(doc: dict[str, Any]) -> sns.SnsMessage:
    return sns.parse_message(json.dumps(doc).encode())


def test_string_to_sign_follows_aws_order_and_skips_absent_keys() -> None:
    doc = {
        "Type": "Notification",
        "MessageId": "m1",
        "TopicArn": "t",
        "Message": "hello",
        "Timestamp": "2026-01-01T00:00:00.000Z",
        "SignatureVersion": "1",
        "Signature": "x",
        "SigningCertURL": CERT_URL,
        "UnsubscribeURL": "u",
    }
    assert sns.string_to_sign(parse(doc)) == (
        b"Message\nhello\nMessageId\nm1\nTimestamp\n2026-01-01T00:00:00.000Z\nTopicArn\nt\nType\nNotification\n"
    )
    with_subject = sns.string_to_sign(parse({**doc, "Subject": "s"}))
    assert b"MessageId\nm1\nSubject\ns\nTimestamp" in with_subject
    conf = {**doc, "Type": "SubscriptionConfirmation", "SubscribeURL": "https://x", "Token": "tk"}
    assert sns.string_to_sign(parse(conf)) == (
        b"Message\nhello\nMessageId\nm1\nSubscribeURL\nhttps://x\nTimestamp\n2026-01-01T00:00:00.000Z\n"
        b"Token\ntk\nTopicArn\nt\nType\nSubscriptionConfirmation\n"
    )


@pytest.mark.parametrize("version", ["1", "2"])
async def test_valid_signatures_verify_for_both_versions(ident: Identity, version: str) -> None:
    fetched: list[str] = []
    v = verifier(ident, fetched)
    for _ in range(3):
        doc = notification(ident, CERT_URL, {"eventType": "Send"}, version=version, subject="subj")
        await v.verify(parse(doc))
    conf = confirmation(
        ident, CERT_URL, "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription", version=version
    )
    await v.verify(parse(conf))
    assert fetched == [CERT_URL]  # cached after the first fetch


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"Message": '{"eventType":"Bounce"}'}, "signature"),
        ({"MessageId": "other"}, "signature"),
        ({"Timestamp": "2020-01-01T00:00:00.000Z"}, "signature"),
        ({"Subject": "added"}, "signature"),
        ({"Signature": "AAAA"}, "signature"),
        ({"Signature": "not base64!"}, "signature"),
        ({"SignatureVersion": "3"}, "signature_version"),
        ({"TopicArn": OTHER_TOPIC}, "topic"),
        (
            {"SigningCertURL": "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem"},
            "cert_url",
        ),
        ({"SigningCertURL": "https://sns.us-east-1.amazonaws.com.evil.com/x.pem"}, "cert_url"),
        ({"SigningCertURL": "https://sns.us-east-1.amazonaws.com/x.txt"}, "cert_url"),
        ({"SigningCertURL": "https://user@sns.us-east-1.amazonaws.com/x.pem"}, "cert_url"),
        ({"SigningCertURL": "https://sns.us-east-1.amazonaws.com:444/x.pem"}, "cert_url"),
        ({"SigningCertURL": "https://127.0.0.1:8443/x.pem"}, "cert_url"),
        ({"SigningCertURL": CERT_URL + "\n"}, "cert_url"),
        ({"SigningCertURL": "https://sns.us-east-1.amazonaws.com/\tx.pem"}, "cert_url"),
    ],
)
async def test_tampered_messages_are_refused(ident: Identity, change: dict[str, str], reason: str) -> None:
    fetched: list[str] = []
    v = verifier(ident, fetched)
    doc = {**notification(ident, CERT_URL, {"eventType": "Send"}, version="2"), **change}
    with pytest.raises(sns.SnsError) as err:
        await v.verify(parse(doc))
    assert err.value.reason == reason
    if reason in ("topic", "cert_url", "signature_version"):
        assert fetched == []  # refused before any certificate fetch


def test_production_default_refuses_local_certificate_server() -> None:
    with pytest.raises(sns.SnsError):
        sns.check_cert_url("https://127.0.0.1:8443/SimpleNotificationService-test.pem", PROD_PATTERN)
    sns.check_cert_url(
        "https://127.0.0.1:8443/SimpleNotificationService-test.pem", PROD_PATTERN, ["https://127.0.0.1:8443/"]
    )
    sns.check_cert_url("https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem", PROD_PATTERN)
    sns.check_cert_url(
        "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-1.pem", PROD_PATTERN
    )
    # A trusted prefix cannot be stretched into another host, and still needs .pem.
    for bad in ("https://127.0.0.1:8443@evil.example/x.pem", "https://127.0.0.1:8443/x.txt"):
        with pytest.raises(sns.SnsError):
            sns.check_cert_url(bad, PROD_PATTERN, ["https://127.0.0.1:8443/"])


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"Type":"Notification"}',
        b'{"Type":"Other"}',
        b"\xff\xfe",
        b'{"Type":"Notification","MessageId":1,"TopicArn":"t","Message":"m","Timestamp":"t",'
        b'"SignatureVersion":"1","Signature":"s","SigningCertURL":"u"}',
        b'{"Type":"SubscriptionConfirmation","MessageId":"1","TopicArn":"t","Message":"m","Timestamp":"t",'
        b'"SignatureVersion":"1","Signature":"s","SigningCertURL":"u"}',
        b"{" + b" " * (300 * 1024) + b"}",
    ],
)
def test_malformed_bodies_are_refused(body: bytes) -> None:
    with pytest.raises(sns.SnsError):
        sns.parse_message(body)


async def test_subscribe_url_must_be_sns_host(ident: Identity) -> None:
    v = verifier(ident)
    doc = confirmation(ident, CERT_URL, "https://evil.example/?Action=ConfirmSubscription")
    with pytest.raises(sns.SnsError) as err:
        await v.verify(parse(doc))
    assert err.value.reason == "subscribe_url"


async def test_certificate_fetch_is_shared_and_failures_back_off(ident: Identity) -> None:
    calls = 0

    async def slow_fetch(url: str) -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return ident.cert_pem

    cache = sns.CertificateCache(slow_fetch)
    keys = await asyncio.gather(*(cache.get(CERT_URL) for _ in range(20)))
    assert calls == 1 and all(k is keys[0] for k in keys)

    async def broken(url: str) -> bytes:
        nonlocal calls
        calls += 1
        raise OSError("connection refused")

    calls = 0
    bad = sns.CertificateCache(broken)
    for _ in range(5):
        with pytest.raises(sns.SnsError) as err:
            await bad.get(CERT_URL)
        assert err.value.reason == "cert_fetch"
    assert calls == 1

    async def junk(url: str) -> bytes:
        return b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"

    with pytest.raises(sns.SnsError) as err:
        await sns.CertificateCache(junk).get(CERT_URL)
    assert err.value.reason == "cert"
