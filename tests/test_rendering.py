"""Rendering: what a recipient's mail client would see (parsed back with the stdlib email parser)."""

from __future__ import annotations

import email
import email.policy
import functools
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from emailplan.sender.rendering import RenderError, compile_campaign, compile_plan, render
from emailplan.sender.tokens import make_token, read_token

KEY = b"k" * 32
SIGN = functools.partial(make_token, KEY)
PUBLIC = "https://mail.example.org"


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def body(msg: EmailMessage, ctype: str) -> str:
    part = msg.get_body(preferencelist=(ctype.split("/")[1],))
    assert part is not None and part.get_content_type() == ctype
    return str(part.get_content())


def build(
    spec: dict[str, Any],
    *,
    mid: int = 42,
    name: str | None = "Ann",
    variables: dict[str, Any] | None = None,
    to: str = "ann@example.com",
) -> EmailMessage:
    plan = compile_plan(spec, plan_id="3f1c1b9e-0000-4000-8000-000000000001")
    out = render(
        plan, message_id=mid, email=to, name=name, variables=variables or {}, public_url=PUBLIC, sign=SIGN
    )
    return parse(out.raw)


BASE = {
    "from": "News <news@example.com>",
    "subject": "Hello {{ name }}",
    "html": '<html><body><p>Hi {{ name }}, code {{ code }}</p><a href="https://shop.example.com/x?a=1&amp;b=2">go</a></body></html>',
    "text": "Hi {{ name }}, code {{ code }}",
}


def test_headers_subject_and_both_bodies() -> None:
    msg = build({**BASE, "replyTo": ["help@example.com"]}, variables={"code": "C7"})
    assert msg["Subject"] == "Hello Ann"
    assert msg["From"] == "News <news@example.com>"
    assert msg["To"] == "Ann <ann@example.com>"
    assert msg["Reply-To"] == "help@example.com"
    assert msg["X-EmailPlan-Message-Id"] == "42"
    assert msg.get_content_type() == "multipart/alternative"
    assert "Hi Ann, code C7" in body(msg, "text/plain")
    assert "Hi Ann, code C7" in body(msg, "text/html")


def test_plan_wide_headers_and_template_globals_hold_for_every_recipient() -> None:
    # Parts shared by a plan are compiled once; each recipient still gets its own values.
    spec = {
        **BASE,
        "subject": "{% for i in range(3) %}{{ i }}{% endfor %} {{ cycler }} {{ name }}",
        "replyTo": ["a@example.com", "b@example.com"],
    }
    plan = compile_plan(spec, plan_id="3f1c1b9e-0000-4000-8000-000000000001")
    first, second = (
        parse(render(plan, message_id=mid, email=to, name=who, variables=v, public_url=PUBLIC, sign=SIGN).raw)
        for mid, to, who, v in (
            (1, "ann@example.com", "Ann", {"cycler": "x"}),
            (2, "bo@example.com", "Bo", {}),
        )
    )
    assert first["Subject"] == "012 x Ann"  # a recipient's variable wins over a template global
    assert second["Subject"].startswith("012 <") and second["Subject"].endswith(" Bo")
    for msg, mid in ((first, "1"), (second, "2")):
        assert msg["X-EmailPlan-Message-Id"] == mid
        assert msg["X-EmailPlan-Plan-Id"] == "3f1c1b9e-0000-4000-8000-000000000001"
        assert msg["Reply-To"] == "a@example.com, b@example.com"
        assert msg["MIME-Version"] == "1.0"
        assert msg["Date"].datetime is not None  # RFC 5322 date, parsed back
    assert read_token(KEY, "unsub", first["List-Unsubscribe"][1:-1].split("t=")[1]) == 1
    assert read_token(KEY, "unsub", second["List-Unsubscribe"][1:-1].split("t=")[1]) == 2


def test_html_is_autoescaped_and_sandboxed() -> None:
    msg = build(BASE, name="<script>alert(1)</script>", variables={"code": "&"})
    html = body(msg, "text/html")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "code &amp;" in html
    with pytest.raises(RenderError):
        build({**BASE, "html": "{{ ''.__class__.__mro__[1].__subclasses__() }}"})


@pytest.mark.parametrize(
    ("tracking", "pixel", "rewritten"),
    [({}, True, False), ({"opens": False}, False, False), ({"opens": True, "clicks": True}, True, True)],
)
def test_tracking_pixel_and_click_rewrite(tracking: dict[str, bool], pixel: bool, rewritten: bool) -> None:
    msg = build({**BASE, "tracking": tracking}, mid=77)
    html = body(msg, "text/html")
    assert ("/v1/events/open?requestId=" in html) is pixel
    if pixel:
        token = html.split("/v1/events/open?requestId=")[1].split('"')[0]
        assert read_token(KEY, "open", token) == 77
    assert ("/v1/events/click?" in html) is rewritten
    if rewritten:
        link = html.split('<a href="')[1].split('"')[0].replace("&amp;", "&")
        query = parse_qs(urlsplit(link).query)
        target = query["u"][0]
        assert target == "https://shop.example.com/x?a=1&b=2"
        assert read_token(KEY, "click", query["t"][0], extra=target) == 77
        assert read_token(KEY, "click", query["t"][0], extra="https://evil.example") is None
    else:
        assert 'href="https://shop.example.com/x?a=1&amp;b=2"' in html


def test_one_click_unsubscribe_headers_and_visible_link() -> None:
    msg = build(BASE, mid=5)
    header = msg["List-Unsubscribe"]
    assert header.startswith(f"<{PUBLIC}/v1/unsubscribe?t=") and header.endswith(">")
    token = header[1:-1].split("t=")[1]
    assert read_token(KEY, "unsub", token) == 5
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert header[1:-1] in body(msg, "text/plain")
    assert "Unsubscribe</a>" in body(msg, "text/html")
    off = build({**BASE, "unsubscribe": {"enabled": False}})
    assert off["List-Unsubscribe"] is None


def test_variables_cannot_inject_headers_and_unicode_is_encoded() -> None:
    msg = build({**BASE, "subject": "Für {{ name }}"}, name="Zoë\r\nBcc: victim@example.com")
    assert msg["Bcc"] is None
    assert msg["Subject"] == "Für Zoë Bcc: victim@example.com"
    raw_headers = msg.as_bytes().split(b"\n\n")[0]
    assert raw_headers.isascii()


def test_single_part_when_only_text() -> None:
    msg = build({"from": "a@example.com", "subject": "s", "text": "only text {{ email }}"})
    assert msg.get_content_type() == "text/plain"
    assert "only text ann@example.com" in msg.get_content()


@pytest.mark.parametrize(
    "spec",
    [
        {"subject": "s", "text": "t"},
        {"from": "not an address", "subject": "s", "text": "t"},
        {"from": "a@example.com", "text": "t"},
        {"from": "a@example.com", "subject": "s"},
        {"from": "a@example.com", "subject": "{% if %}", "text": "t"},
    ],
)
def test_bad_specs_are_refused(spec: dict[str, Any]) -> None:
    with pytest.raises(RenderError):
        compile_plan(spec)


def test_ses_tags_are_sanitized_and_carry_ids() -> None:
    plan = compile_plan(
        {**BASE, "ses": {"configurationSet": "cs1", "tags": {"camp aign": "spring/2026"}}}, "p-1"
    )
    out = render(
        plan, message_id=9, email="x@example.com", name=None, variables={}, public_url=PUBLIC, sign=SIGN
    )
    assert out.tags == {"camp_aign": "spring_2026", "emailplan-plan": "p-1", "emailplan-message": "9"}
    assert out.configuration_set == "cs1"


# ----------------------------------------------------------------------------- A/B variants

AB = {
    **BASE,
    "variants": [
        {"name": "calm", "subject": None, "html": None, "text": None, "fromName": None},
        {
            "name": "loud",
            "subject": "HELLO {{ name }}!",
            "html": "<p><b>{{ name }}</b></p>",
            "fromName": "Shop",
        },
    ],
    "testPercent": 10,  # buckets 0-999
    "winner": None,
}


def campaign_mail(spec: dict[str, Any], bucket: int) -> EmailMessage | None:
    chosen = compile_campaign(spec, "3f1c1b9e-0000-4000-8000-000000000001").pick(bucket)
    if chosen is None:
        return None
    out = render(
        chosen, message_id=7, email="ann@example.com", name="Ann", variables={}, public_url=PUBLIC, sign=SIGN
    )
    assert out.tags.get("emailplan-variant") == parse(out.raw)["X-EmailPlan-Variant"]
    return parse(out.raw)


@pytest.mark.parametrize(
    ("bucket", "winner", "variant", "subject", "sender"),
    [
        (0, None, "calm", "Hello Ann", "News <news@example.com>"),  # the plan's own message
        (1, None, "loud", "HELLO Ann!", "Shop <news@example.com>"),  # overrides, same address
        (998, None, "calm", "Hello Ann", "News <news@example.com>"),
        (999, "calm", "loud", "HELLO Ann!", "Shop <news@example.com>"),  # in the cohort: its own variant
        (1000, None, None, None, None),  # outside the cohort, no winner yet: nothing to send
        (1000, "loud", "loud", "HELLO Ann!", "Shop <news@example.com>"),
        (9999, "calm", "calm", "Hello Ann", "News <news@example.com>"),
    ],
)
def test_each_bucket_gets_its_variant_or_the_winner(
    bucket: int, winner: str | None, variant: str | None, subject: str | None, sender: str | None
) -> None:
    msg = campaign_mail({**AB, "winner": winner}, bucket)
    if variant is None:
        assert msg is None
        return
    assert msg is not None
    assert (msg["X-EmailPlan-Variant"], msg["Subject"], msg["From"]) == (variant, subject, sender)
    assert ("<b>Ann</b>" in body(msg, "text/html")) == (variant == "loud")
    assert body(msg, "text/plain").startswith("Hi Ann")  # text is not overridden: the plan's


def test_a_plan_without_variants_has_no_variant_header() -> None:
    msg = campaign_mail(BASE, 5000)
    assert msg is not None and msg["X-EmailPlan-Variant"] is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"subject": "{{ broken"}, "subject"),
        ({"html": "{% for %}"}, "html"),
        ({"variants": [AB["variants"][0], {"name": "x", "text": "{{ 1 + }}"}]}, "variants[1].text"),
        ({"variants": [{"name": "x", "html": "", "text": ""}, AB["variants"][1]]}, "variants[0].html"),
    ],
)
def test_compile_errors_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(RenderError) as caught:
        compile_campaign({**AB, **change})
    assert caught.value.field == field
