"""SES event normalisation: both SNS shapes, every event kind, mapping fallbacks."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.api import ses_event

from emailplan.contract.textcheck import REPLACEMENT, find_bad_text
from emailplan.sender.sesevents import Kind, SesEventError, normalise, parse_ses_message, storable_message

# Any text JSON can carry, lone surrogates and NUL included.
_TEXT = st.text(st.characters(codec=None, categories=None, exclude_characters=()), max_size=12)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)


@given(_JSON, st.booleans())
def test_a_stored_message_holds_only_text_postgresql_takes_and_changes_nothing_else(
    doc: object, ascii_escapes: bool
) -> None:
    text = json.dumps(doc, ensure_ascii=ascii_escapes)
    if not ascii_escapes and find_bad_text(doc) is not None:
        return  # a raw lone surrogate: not text SNS can sign, refused before this (test_api_sns)
    stored = storable_message(text)
    assert find_bad_text(json.loads(stored)) is None
    if find_bad_text(doc) is None:
        assert json.loads(stored) == doc  # the same message (escapes may be written differently)
    else:
        assert REPLACEMENT in stored


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("Send", Kind.SEND),
        ("Delivery", Kind.DELIVERY),
        ("Bounce", Kind.BOUNCE),
        ("Complaint", Kind.COMPLAINT),
        ("Reject", Kind.REJECT),
        ("DeliveryDelay", Kind.DELIVERY_DELAY),
        ("Open", Kind.OPEN),
        ("Click", Kind.CLICK),
        ("Rendering Failure", Kind.RENDERING_FAILURE),
    ],
)
def test_event_publishing_kinds(name: str, kind: Kind) -> None:
    ev = parse_ses_message(json.dumps(ses_event(name, "ses-1", ["a@example.com"])))
    assert ev is not None
    assert ev.kind is kind
    assert ev.ses_message_id == "ses-1"
    assert ev.recipients == ("a@example.com",)
    assert ev.occurred_at is not None


@pytest.mark.parametrize("name", ["Bounce", "Complaint", "Delivery"])
def test_notification_shape_is_the_same(name: str) -> None:
    a = normalise(ses_event(name, "ses-2", ["x@example.com"], shape="event"))
    b = normalise(ses_event(name, "ses-2", ["x@example.com"], shape="notification"))
    assert a == b


@pytest.mark.parametrize(
    ("bounce_type", "hard"), [("Permanent", True), ("Transient", False), ("Undetermined", False)]
)
def test_only_permanent_bounces_and_complaints_suppress(bounce_type: str, hard: bool) -> None:
    ev = normalise(ses_event("Bounce", "s", ["a@example.com"], bounce_type=bounce_type))
    assert ev is not None
    assert ev.bounce_type == bounce_type
    assert ev.hard_bounce is hard and ev.suppresses is hard
    complaint = normalise(ses_event("Complaint", "s", ["a@example.com"]))
    assert complaint is not None and complaint.suppresses and complaint.feedback_type == "abuse"
    delivery = normalise(ses_event("Delivery", "s", ["a@example.com"]))
    assert delivery is not None and not delivery.suppresses


def test_one_notification_covers_several_recipients() -> None:
    ev = normalise(ses_event("Bounce", "s", ["A@Example.com", '"Bob" <bob@example.com>', "a@example.com"]))
    assert ev is not None
    assert ev.recipients == ("a@example.com", "bob@example.com")


def test_fallback_mapping_by_tag_and_header() -> None:
    doc = ses_event("Delivery", "ses-9", ["a@example.com"], message_ref=42)
    ev = normalise(doc)
    assert ev is not None and ev.message_ref == 42 and ev.ses_message_id == "ses-9"
    # Header only (identity notifications carry no tags).
    del doc["mail"]["tags"]
    doc["mail"]["messageId"] = None
    ev = normalise(doc)
    assert ev is not None and ev.message_ref == 42 and ev.ses_message_id is None


@pytest.mark.parametrize(
    "text",
    [
        "nope",
        "[]",
        '{"eventType": 3}',
        '{"eventType": "Teleport", "mail": {"messageId": "x"}}',
        '{"notificationType": "Bounce", "mail": {}}',
        "{}",
    ],
)
def test_garbage_is_refused(text: str) -> None:
    with pytest.raises(SesEventError):
        parse_ses_message(text)


def test_subscription_succeeded_is_ignored() -> None:
    assert parse_ses_message('{"notificationType":"AmazonSnsSubscriptionSucceeded","message":"ok"}') is None


def test_hostile_field_types_do_not_crash() -> None:
    doc = {
        "eventType": "Bounce",
        "mail": {"messageId": "m", "destination": "notalist", "tags": [1], "headers": {"a": 1}},
        "bounce": {"bouncedRecipients": [None, 5, {"emailAddress": 7}], "bounceType": ["x"]},
    }
    ev = normalise(doc)
    assert ev is not None and ev.recipients == () and ev.bounce_type is None and not ev.suppresses
