"""Addresses SES can send and header text a reader cannot misread (issue 20, sender side).

Pure parts, judged as a recipient's mail client would judge them: every rendered
message is parsed back with the stdlib parser (``policy.default`` decodes RFC 2047
encoded words, as mail readers do).

* an IDN domain is sent as punycode (To, From, Reply-To and the SES destination), and
  the stored form of an address is that ASCII form, so a suppression written either
  way matches the other;
* a non-ASCII local part (SMTPUTF8, which SES does not send) is refused at intake with
  its row and a reason, and a row that reaches the renderer anyway fails alone with an
  ``InvalidAddress`` reason instead of raising something the worker does not expect;
* no user text (a variable, a name) reaches a header as a raw encoded word: the literal
  ``=?utf-8?q?X?=`` in a variable arrives as that literal text.
"""

from __future__ import annotations

import email
import email.policy
import functools
import json
from email.message import EmailMessage
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.worker import SENDER_HEADERS

from emailplan.contract.addresses import AddressError, normalize_address
from emailplan.contract.headers import one_line
from emailplan.contract.recipients import ListFormat, Recipient, RowError, read_text
from emailplan.sender.bulkmail import compile_bulk, entry
from emailplan.sender.rendering import RenderError, compile_plan, render
from emailplan.sender.tokens import make_token

SIGN = functools.partial(make_token, b"k" * 32)
PUBLIC = "https://mail.example.org"
PLAN_ID = "3f1c1b9e-0000-4000-8000-000000000001"
SPEC: dict[str, Any] = {
    "from": "News <news@example.com>",
    "subject": "Hello {{ name }} {{ code }}",
    "text": "Hi {{ name }}",
    "html": "<p>Hi {{ name }}</p>",
    "replyTo": ["Hilfe Zoë <hilfe@bücher.example>"],
}
ENCODED_WORD = "=?utf-8?q?X?="


def rendered(spec: dict[str, Any], *, to: str, name: str | None, variables: dict[str, Any]) -> Any:
    plan = compile_plan(spec, plan_id=PLAN_ID)
    return render(plan, message_id=7, email=to, name=name, variables=variables, public_url=PUBLIC, sign=SIGN)


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def header_block(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


# ---------------------------------------------------------------- stored form and intake


@pytest.mark.parametrize(
    ("given_as", "stored"),
    [
        ("user@bücher.example", "user@xn--bcher-kva.example"),
        ("User@BÜCHER.Example", "user@xn--bcher-kva.example"),
        ("user@xn--bcher-kva.example", "user@xn--bcher-kva.example"),
        ("ann@example.com", "ann@example.com"),
    ],
)
def test_the_stored_form_of_an_idn_address_is_punycode(given_as: str, stored: str) -> None:
    """One stored form: a suppression of ``user@xn--bcher-kva.example`` (what SES reports in a
    bounce) is the same address as ``user@bücher.example`` on a list."""
    assert normalize_address(given_as) == stored


@pytest.mark.parametrize("address", ["üser@example.com", "zoë@exämple.com", "пользователь@example.com"])
def test_a_non_ascii_local_part_is_refused_naming_smtputf8(address: str) -> None:
    with pytest.raises(AddressError, match=r"non-ASCII local part.*SMTPUTF8"):
        normalize_address(address)


def test_a_list_row_with_a_non_ascii_local_part_is_rejected_with_its_row_number() -> None:
    text = "email,name\nann@example.com,Ann\nüser@example.com,Ü\nuser@bücher.example,B\n"
    out = list(read_text(text, ListFormat.CSV))
    assert isinstance(out[0], Recipient) and out[0].email == "ann@example.com"
    assert isinstance(out[1], RowError) and out[1].row == 2 and out[1].field == "email"
    assert "non-ASCII local part" in out[1].message and "SMTPUTF8" in out[1].message
    assert isinstance(out[2], Recipient) and out[2].email == "user@xn--bcher-kva.example"


def test_from_and_reply_to_with_a_non_ascii_local_part_are_refused() -> None:
    with pytest.raises(RenderError, match="from: non-ASCII local part"):
        compile_plan({**SPEC, "from": "Zoë <zoë@example.com>"})
    with pytest.raises(RenderError, match=r"replyTo\[0\]: non-ASCII local part"):
        compile_plan({**SPEC, "replyTo": ["üser@example.com"]})


# ---------------------------------------------------------------- rendering


def test_an_idn_recipient_with_a_name_is_sent_as_punycode() -> None:
    out = rendered(
        {**SPEC, "from": "Bücher <news@bücher.example>"},
        to="user@bücher.example",
        name="Zoë Müller",
        variables={"code": "C1"},
    )
    msg = parse(out.raw)
    assert header_block(out.raw).isascii()
    assert msg["To"].addresses[0].addr_spec == "user@xn--bcher-kva.example"
    assert msg["To"].addresses[0].display_name == "Zoë Müller"
    assert out.to_address == "user@xn--bcher-kva.example"
    assert msg["From"].addresses[0].addr_spec == "news@xn--bcher-kva.example"
    assert out.from_address == "news@xn--bcher-kva.example"
    assert msg["Reply-To"].addresses[0].addr_spec == "hilfe@xn--bcher-kva.example"
    assert msg["Reply-To"].addresses[0].display_name == "Hilfe Zoë"


def test_a_row_with_a_non_ascii_local_part_fails_to_render_with_a_reason() -> None:
    """Rows stored before intake refused them: the message fails alone, with a reason."""
    with pytest.raises(RenderError, match="non-ASCII local part") as caught:
        rendered(SPEC, to="üser@example.com", name="Ü", variables={"code": "x"})
    assert type(caught.value).__name__ == "InvalidAddress"


@pytest.mark.parametrize("where", ["variable", "name"])
def test_an_encoded_word_in_user_data_arrives_as_literal_text(where: str) -> None:
    name = f"Ann {ENCODED_WORD}" if where == "name" else "Ann"
    code = ENCODED_WORD if where == "variable" else "C1"
    out = rendered(SPEC, to="ann@example.com", name=name, variables={"code": code})
    msg = parse(out.raw)
    assert msg["Subject"] == f"Hello {name} {code}"
    assert msg["To"].addresses[0].display_name == name


def test_long_unicode_subjects_fold_with_crlf_only() -> None:
    out = rendered(SPEC, to="ann@example.com", name="Zoë", variables={"code": "ü" * 300})
    block = header_block(out.raw)
    assert b"\n" not in block.replace(b"\r\n", b"")
    assert parse(out.raw)["Subject"] == "Hello Zoë " + "ü" * 300


def test_bulk_entries_address_idn_recipients_as_punycode() -> None:
    plan = compile_bulk({**SPEC, "ses": {"sendApi": "bulk"}}, PLAN_ID)
    item = entry(
        plan,
        message_id=3,
        email="user@bücher.example",
        name="Zoë",
        variables={"code": "c"},
        public_url=PUBLIC,
        sign=SIGN,
    )
    (to,) = item["Destination"]["ToAddresses"]
    assert to.isascii() and to.endswith("<user@xn--bcher-kva.example>")
    assert email.utils.getaddresses([to])[0][1] == "user@xn--bcher-kva.example"


def test_bulk_subject_values_never_carry_a_raw_encoded_word() -> None:
    plan = compile_bulk({**SPEC, "ses": {"sendApi": "bulk"}}, PLAN_ID)
    item = entry(
        plan,
        message_id=3,
        email="a@example.com",
        name="A",
        variables={"code": ENCODED_WORD},
        public_url=PUBLIC,
        sign=SIGN,
    )
    data = json.loads(item["ReplacementEmailContent"]["ReplacementTemplate"]["ReplacementTemplateData"])
    assert "=?" not in data["s"]["code"]


# ---------------------------------------------------------------- property: any text, any IDN


labels = st.text(
    alphabet=st.characters(categories=["Ll", "Lo"], max_codepoint=0x30FF), min_size=1, max_size=12
)
idn_addresses = st.builds(
    lambda local, label: f"{local}@{label}.example",
    st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,5})?", fullmatch=True),
    labels,
)
any_text = st.text(max_size=60) | st.sampled_from([ENCODED_WORD, "=?", "\r\nBcc: x@y.example", "é\u2028"])


@settings(max_examples=300, deadline=None)
@given(address=idn_addresses, name=any_text, code=any_text)
def test_any_name_variable_and_accepted_address_renders_safe_headers(
    address: str, name: str, code: str
) -> None:
    try:
        stored = normalize_address(address)
    except AddressError:
        return  # not something intake accepts
    try:
        out = rendered(SPEC, to=stored, name=name or None, variables={"code": code})
    except RenderError:
        return  # a name or variable no template can render is a failed message, not a crash
    assert header_block(out.raw).isascii()
    msg = parse(out.raw)
    assert {k.lower() for k in msg} <= SENDER_HEADERS
    assert msg.get_all("Bcc") is None and msg.get_all("Cc") is None
    assert msg["To"].addresses[0].addr_spec == stored
    assert msg["Subject"] == one_line(f"Hello {one_line(name)} {code}")
