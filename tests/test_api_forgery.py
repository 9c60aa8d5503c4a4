"""10,000 forged or malformed SNS posts and 10,000 forged pixel tokens: nothing is recorded.

Runs in-process against the live aiohttp server (real sockets on loopback)
with bounded concurrency, so it is fast and not timing-dependent.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
from typing import Any

from support.api import (
    OTHER_TOPIC,
    Identity,
    LiveApi,
    confirmation,
    make_identity,
    make_plan,
    notification,
    ses_event,
)

from emailplan.sender.api.tracking import GIF

N = 10_000
SIGNED = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}


def forged_sns(rng: random.Random, api: LiveApi, genuine: list[dict[str, Any]], attacker: Identity) -> bytes:
    """One forged or malformed body, from a mix of strategies."""
    kind = rng.randrange(9)
    base = dict(rng.choice(genuine))
    # Only fields covered by the signature: changing UnsubscribeURL, say, leaves an authentic message.
    signed = [
        k for k in (*SIGNED[base["Type"]], "Signature", "SigningCertURL", "SignatureVersion") if k in base
    ]
    if kind == 0:  # a genuine message with one signed field changed
        field = rng.choice(signed)
        base[field] = base.get(field, "") + rng.choice(["x", " ", "0", "\n"])
        return json.dumps(base).encode()
    if kind == 1:  # signed with the attacker's key, pointing at the trusted certificate
        msg = ses_event("Complaint", f"ses-{rng.random()}", [f"victim{rng.randrange(100)}@example.com"])
        return json.dumps(notification(attacker, api.certs.cert_url, msg, version=rng.choice("12"))).encode()
    if kind == 2:  # unknown topic, correctly signed
        msg = ses_event("Bounce", f"ses-{rng.random()}", ["v@example.com"])
        return json.dumps(notification(api.ident, api.certs.cert_url, msg, topic=OTHER_TOPIC)).encode()
    if kind == 3:  # certificate URL games
        url = rng.choice(
            [
                api.certs.cert_url.replace("https://", "http://"),
                "https://sns.us-east-1.amazonaws.com.evil.example/x.pem",
                api.certs.cert_url.replace(".pem", ".txt"),
                "file:///etc/passwd",
                "",
            ]
        )
        return json.dumps({**base, "SigningCertURL": url}).encode()
    if kind == 4:  # random signatures
        sig = base64.b64encode(rng.randbytes(rng.choice([0, 1, 64, 256, 512]))).decode()
        return json.dumps(
            {**base, "Signature": sig, "SignatureVersion": rng.choice(["1", "2", "3", "", "1.0"])}
        ).encode()
    if kind == 5:  # wrong types
        field = rng.choice(signed)
        base[field] = rng.choice([None, 1, [], {}, True, 1.5])
        return json.dumps(base).encode()
    if kind == 6:  # fields missing
        for field in rng.sample(signed, rng.randrange(1, 4)):
            base.pop(field, None)
        return json.dumps(base).encode()
    if kind == 7:  # not JSON / not an object
        return rng.choice(
            [b"", b"{", b"null", b"[]", b'"x"', b"\xff\xfe\x00", rng.randbytes(rng.randrange(1, 200))]
        )
    return json.dumps({k: rng.choice(["", "x" * rng.randrange(0, 300)]) for k in base}).encode()


def forged_token(rng: random.Random, api: LiveApi, real_ids: list[int]) -> str:
    kind = rng.randrange(6)
    mid = rng.choice(real_ids)
    if kind == 0:
        return api.token("click", mid)  # right id, wrong purpose
    if kind == 1:
        return api.token("unsub", mid)
    if kind == 2:
        good = api.token("open", mid)
        i = rng.randrange(len(good))
        return good[:i] + rng.choice("ABCxyz019-_".replace(good[i], "")) + good[i + 1 :]
    if kind == 3:
        return base64.urlsafe_b64encode(rng.randbytes(24)).decode().rstrip("=")
    if kind == 4:
        return "".join(rng.choice("abc%$/?&=+ é\x00") for _ in range(rng.randrange(0, 120)))
    return rng.choice(["", "=", "A" * 70, api.token("open", mid) + "A"])


async def test_forged_sns_and_pixel_traffic_records_nothing(api: LiveApi) -> None:
    rng = random.Random(20260401)
    attacker = make_identity()
    plan, ids, ses = await make_plan(api, [f"r{i}@example.com" for i in range(20)])
    real_ids = list(ids.values())
    genuine = [
        notification(
            api.ident, api.certs.cert_url, ses_event("Complaint", ses[e], [e]), version=v, subject="s"
        )
        for e, v in zip(list(ses)[:4], "1212", strict=True)
    ] + [confirmation(api.ident, api.certs.cert_url, f"{api.certs.prefix}confirm?Token=zzz")]
    sns_bodies = [forged_sns(rng, api, genuine, attacker) for _ in range(N)]
    tokens = [forged_token(rng, api, real_ids) for _ in range(N)]
    statuses: dict[int, int] = {}
    bad_pixels = 0
    sem = asyncio.Semaphore(64)

    async def post(body: bytes) -> None:
        async with sem:
            resp = await api.client.post(
                "/v1/events/result", data=body, headers={"Content-Type": "text/plain"}
            )
            await resp.read()
            statuses[resp.status] = statuses.get(resp.status, 0) + 1

    async def pix(token: str) -> None:
        nonlocal bad_pixels
        async with sem:
            resp = await api.client.get("/v1/events/open", params={"requestId": token})
            body = await resp.read()
            if resp.status != 200 or body != GIF or resp.headers.get("Content-Type") != "image/gif":
                bad_pixels += 1

    for start in range(0, N, 1000):
        await asyncio.gather(
            *(post(b) for b in sns_bodies[start : start + 1000]),
            *(pix(t) for t in tokens[start : start + 1000]),
        )
    assert bad_pixels == 0
    assert set(statuses) <= {400, 403, 413}, statuses
    assert sum(statuses.values()) == N
    await asyncio.sleep(0.4)  # one open-buffer interval: nothing should be written
    assert await api.scalar("SELECT count(*) FROM events") == 0
    assert await api.scalar("SELECT count(*) FROM suppressions") == 0
    assert await api.scalar("SELECT count(*) FROM messages WHERE opened_at IS NOT NULL") == 0
    counts = await api.counts(plan)
    assert all(counts[k] == 0 for k in ("opened", "openedMachine", "complained", "bounced", "delivered"))
    assert api.certs.subscribe_hits == []
    assert api.certs.cert_hits <= 2  # the trusted certificate is fetched once and cached
    # And genuine traffic is still accepted afterwards.
    resp = await api.post_sns(genuine[0])
    assert resp.status == 200 and (await api.counts(plan))["complained"] == 1
