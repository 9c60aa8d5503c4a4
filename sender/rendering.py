"""Render one recipient's email as raw MIME. Pure: no I/O, deterministic but for the boundary.

Templates run in Jinja2's sandbox (a campaign author must not reach Python
internals), HTML bodies are autoescaped (a recipient's name is data, not
markup). Tracking is added after rendering, so links built from variables are
tracked too: an open pixel, click links rewritten through the signed redirect
(``/v1/events/click``, token bound to the URL so it cannot redirect elsewhere),
and RFC 8058 one-click unsubscribe headers. Raw MIME is built by hand: it is the
only SES content type that carries our own headers, and ``email.message`` costs
more CPU per message than the whole send at 1,000/s.

Because the MIME is built by hand, no header is ever built from an unsafe
value: from and replyTo are refused at compile time unless they pass the
contract's mailbox check (one address, no CR/LF or control characters), and
text that reaches a header after rendering (subject, a recipient's name) is
flattened to one line without control characters. Header text that is not
plain ASCII, or that holds ``=?`` (a reader would decode a literal encoded word
written by a user), is encoded by ``email.header`` from the real text, so what a
reader decodes is exactly that text. Addresses go out in their ASCII form (an IDN
domain as punycode): SES does not send SMTPUTF8 mail, so a non-ASCII local part is
an :class:`InvalidAddress` (the message fails alone, with that reason).
"""

from __future__ import annotations

import base64
import functools
import html
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.header import Header
from email.utils import formataddr, formatdate, parseaddr
from typing import Any, Protocol, TypedDict, Unpack
from urllib.parse import quote

from jinja2 import Template, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from emailplan.contract.addresses import AddressError, check_mailbox, normalize_address
from emailplan.contract.cohorts import Split
from emailplan.contract.headers import one_line
from emailplan.contract.httpapi import CLICK, OPEN_PIXEL, UNSUBSCRIBE
from emailplan.contract.route import VERSION_PREFIX

_HTML_ENV = SandboxedEnvironment(autoescape=True)
_TEXT_ENV = SandboxedEnvironment(autoescape=False)
_LINK = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(https?://[^"'<>\s]+)\2""", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_TAG_OK = re.compile(r"[^A-Za-z0-9_-]")
VARIANT_TAG = "emailplan-variant"
VARIANT_HEADER = "X-EmailPlan-Variant"


class Signer(Protocol):
    """Makes a tracking token: ``tokens.make_token`` with the key bound by the caller.

    Passed in rather than imported so the pure modules stay independent of each
    other (layer contract) and rendering never handles the key itself.
    """

    def __call__(self, purpose: str, message_id: int, extra: str = "") -> str: ...


class RecipientArgs(TypedDict):
    """One recipient of a message: the keyword arguments of ``render`` and ``bulkmail.entry``."""

    message_id: int
    email: str
    name: str | None
    variables: Mapping[str, Any]
    public_url: str
    sign: Signer


def recipient_names(plan: CompiledPlan, recipient: RecipientArgs) -> tuple[str, str, dict[str, Any]]:
    """The public URL, the unsubscribe URL ("" when off) and the names every template of one
    recipient sees: the built-in ones a plan's validation promises, over the recipient's own
    variables where they collide (``name``, ``email``, ``unsubscribe_url``), under them otherwise.

    Raw and bulk sends both read this, so a recipient's mail says the same whichever API sent it.
    """
    public_url = recipient["public_url"].rstrip("/")
    message_id = recipient["message_id"]
    unsub = unsubscribe_url(public_url, recipient["sign"], message_id) if plan.unsubscribe else ""
    names = {
        "plan": plan.plan_name,
        "message_id": message_id,
        **recipient["variables"],
        "name": recipient["name"] or "",
        "email": recipient["email"],
        "unsubscribe_url": unsub,
    }
    return public_url, unsub, names


class RenderError(ValueError):
    """A template that cannot be compiled or rendered (the plan is refused / the message fails).

    ``field`` names the spec field at fault (``subject``, ``variants[1].html``…) so the
    plan API can say which one; None when no single field is to blame.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidAddress(RenderError):
    """An address SES cannot send to (a non-ASCII local part stored before intake refused it)."""


@dataclass(frozen=True)
class CompiledPlan:
    """A plan's templates compiled once, plus the sending options read from its spec."""

    from_header: str
    from_address: str  # ASCII: an IDN domain in punycode
    reply_to: tuple[str, ...]  # header-ready (ASCII) mailboxes
    subject: Template
    html: Template | None
    text: Template | None
    track_opens: bool
    track_clicks: bool
    unsubscribe: bool
    configuration_set: str | None
    tags: dict[str, str] = field(default_factory=dict)
    plan_id: str = ""
    # Compiled once per plan so a message renders only what is its own: the headers every
    # message of the plan shares (CRLF-terminated) and the template globals (range, dict, …)
    # merged under each recipient's variables.
    shared_headers: str = ""
    template_globals: Mapping[str, Any] = field(default_factory=dict)
    plan_name: str = ""  # the EmailPlan's name: ``{{ plan }}`` in templates


@dataclass(frozen=True)
class RenderedEmail:
    """What the SES client sends: the MIME bytes and the envelope/API fields."""

    raw: bytes
    from_address: str
    to_address: str
    tags: dict[str, str]
    configuration_set: str | None


def _compile(env: SandboxedEnvironment, source: str | None, what: str) -> Template | None:
    if source is None or source == "":
        return None
    try:
        return env.from_string(source)
    except TemplateError as exc:
        raise RenderError(f"{what} template: {exc}", field=what) from exc


def _clean_tag(value: Any) -> str:
    return _TAG_OK.sub("_", str(value))[:256]


def _addresses(spec: Mapping[str, Any]) -> tuple[str, str, tuple[str, ...]]:
    """The sender's display name and (ASCII) address and the Reply-To headers; a bad mailbox
    is a ``RenderError`` naming the field."""
    reply_to = spec.get("replyTo") or []
    if isinstance(reply_to, str):
        reply_to = [reply_to]
    sender = str(spec.get("from") or "")
    problems = check_mailbox(sender, "from")
    for i, value in enumerate(reply_to):
        problems += check_mailbox(str(value), f"replyTo[{i}]")
    if problems:
        raise RenderError("; ".join(problems), field="from" if check_mailbox(sender, "from") else "replyTo")
    name, address = parseaddr(sender)
    name = str(spec.get("fromName") or name)
    address = ascii_address(address)
    replies = tuple(address_header(*parseaddr(str(r))) for r in reply_to)
    return name, address, replies


def compile_plan(spec: Mapping[str, Any], plan_id: str = "", variant: str = "") -> CompiledPlan:
    """Compile a plan spec (camelCase, as in the CRD and the ``plans.spec`` column).

    ``variant`` names the A/B variant this spec is (its fields already merged over the
    plan's by :func:`compile_campaign`); every message then carries its name in the SES
    tag ``emailplan-variant`` and the header ``X-EmailPlan-Variant``, so SES events and
    a recipient's mail say which variant it was.
    """
    name, address, replies = _addresses(spec)
    subject = _compile(_TEXT_ENV, spec.get("subject"), "subject")
    if subject is None:
        raise RenderError("subject is required", field="subject")
    html_t = _compile(_HTML_ENV, spec.get("html"), "html")
    text_t = _compile(_TEXT_ENV, spec.get("text"), "text")
    if html_t is None and text_t is None:
        raise RenderError("html or text is required", field="html")
    tracking = spec.get("tracking") or {}
    unsub = spec.get("unsubscribe") or {}
    ses = spec.get("ses") or {}
    tags = {_clean_tag(k): _clean_tag(v) for k, v in dict(ses.get("tags") or {}).items()}
    if plan_id:
        tags["emailplan-plan"] = _clean_tag(plan_id)
    if variant:
        tags[VARIANT_TAG] = _clean_tag(variant)
    unsubscribe = bool(unsub.get("enabled", True))
    shared = ["MIME-Version: 1.0"]
    if plan_id:
        shared.append(f"X-EmailPlan-Plan-Id: {_clean_tag(plan_id)}")
    if variant:
        shared.append(f"{VARIANT_HEADER}: {_clean_tag(variant)}")
    if replies:
        shared.append(f"Reply-To: {', '.join(replies)}")
    if unsubscribe:
        shared.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    return CompiledPlan(
        from_header=address_header(name, address),
        from_address=address,
        reply_to=replies,
        subject=subject,
        html=html_t,
        text=text_t,
        track_opens=bool(tracking.get("opens", True)),
        track_clicks=bool(tracking.get("clicks", False)),
        unsubscribe=unsubscribe,
        configuration_set=ses.get("configurationSet") or None,
        tags=tags,
        plan_id=_clean_tag(plan_id),
        shared_headers="".join(f"{h}\r\n" for h in shared),
        template_globals=dict(subject.globals),
        plan_name=str(spec.get("name") or ""),
    )


# What a variant may change of the plan's message (``emailplan.contract.plans.Variant``).
VARIANT_FIELDS = ("subject", "html", "text", "fromName")


@dataclass(frozen=True)
class Campaign:
    """A plan compiled once per version: its message, or one per A/B variant.

    ``split`` is None for a plan without variants (every recipient gets ``plans[0]``);
    otherwise ``plans[i]`` is variant ``i`` and the split says which one a bucket gets.
    """

    plans: tuple[CompiledPlan, ...]
    split: Split | None = None

    def pick(self, bucket: int) -> CompiledPlan | None:
        """The message a recipient of ``bucket`` receives; None while its variant is undecided."""
        if self.split is None:
            return self.plans[0]
        index = self.split.variant(bucket)
        return None if index is None else self.plans[index]


def compile_campaign(spec: Mapping[str, Any], plan_id: str = "") -> Campaign:
    """Compile the plan and each of its variants (a variant's set fields override the plan's).

    The plan is compiled first, so an error in a variant can only come from what the
    variant overrides and is reported as ``variants[i].<field>``.
    """
    base = compile_plan(spec, plan_id)
    variants = [dict(v) for v in spec.get("variants") or []]
    if not variants:
        return Campaign((base,))
    compiled = []
    for i, variant in enumerate(variants):
        merged = {**spec, **{k: variant[k] for k in VARIANT_FIELDS if variant.get(k) is not None}}
        try:
            compiled.append(compile_plan(merged, plan_id, variant=str(variant.get("name") or i)))
        except RenderError as exc:
            where = f"variants[{i}]" + (f".{exc.field}" if exc.field else "")
            raise RenderError(f"{where}: {exc}", field=where) from exc
    names = [str(v.get("name")) for v in variants]
    winner = spec.get("winner")
    split = Split.of(
        test_percent=float(spec.get("testPercent") or 0),
        variants=len(compiled),
        winner=names.index(winner) if winner in names else None,
    )
    return Campaign(tuple(compiled), split)


def _one_line(value: str) -> str:
    """Header values never carry line breaks or control characters (a variable must not inject headers)."""
    return one_line(value)


def _header(value: str) -> str:
    """A header value from text: as is when plain ASCII, else encoded words made from the real text."""
    value = _one_line(value)
    if value.isascii() and len(value) < 900 and "=?" not in value:
        return value
    return _encoded(value)


def _encoded(value: str) -> str:
    """RFC 2047 encoded words of ``value``, folded with CRLF (the message's line ends)."""
    return Header(value, "utf-8").encode(linesep="\r\n")


def ascii_address(address: str) -> str:
    """``address`` as SES sends it: unchanged when ASCII, an IDN domain as punycode.

    Intake stores this form already; a row stored before it did is converted here, and
    one SES cannot send at all (a non-ASCII local part) is an :class:`InvalidAddress`.
    """
    if address.isascii():
        return address
    try:
        return normalize_address(address)
    except AddressError as exc:
        raise InvalidAddress(str(exc)) from exc


def address_header(name: str | None, address: str) -> str:
    """One mailbox for To/From/Reply-To: ASCII address, display name encoded when it must be."""
    address = ascii_address(address)
    name = _one_line(name or "")
    if not name:
        return address
    if name.isascii() and "=?" not in name:
        return formataddr((name, address))
    return f"{_encoded(name)} <{address}>"


def _run(template: Template, context: dict[str, Any]) -> str:
    """``template.render(context)`` without Jinja2 merging its globals into a fresh dict per call.

    The caller's ``context`` already holds the plan's globals under the recipient's variables
    (``shared=True`` makes Jinja2 use it as is); the sandbox is in the compiled template, so it
    holds the same.
    """
    return template.environment.concat(  # type: ignore[attr-defined,no-any-return]
        template.root_render_func(template.new_context(context, shared=True))
    )


_date_cache: tuple[int, str] = (0, "")


def _date_header() -> str:
    """RFC 5322 date of now; formatted once a second (every message of that second shares it)."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


def _b64_lines(data: str) -> str:
    """Base64 in 76-character lines (RFC 2045); one b64 call, then slicing (encodebytes is slower)."""
    encoded = base64.b64encode(data.encode("utf-8")).decode("ascii")
    return "\r\n".join([encoded[i : i + 76] for i in range(0, len(encoded), 76)])


# The tracking routes' paths, built once: every link of every message carries one.
_CLICK_PATH, _OPEN_PATH, _UNSUBSCRIBE_PATH = CLICK.url(), OPEN_PIXEL.url(), UNSUBSCRIBE.url()


def click_url(public_url: str, sign: Signer, message_id: int, url: str) -> str:
    """The tracked redirect for ``url``; the token is bound to the URL (no open redirect)."""
    token = sign("click", message_id, url)
    return f"{public_url}{_CLICK_PATH}?t={token}&u={_quoted(url)}"


@functools.lru_cache(maxsize=1024)
def _quoted(url: str) -> str:
    """``url`` as a query value; a plan's links are the same for every recipient, quoted once."""
    return quote(url, safe="")


def open_url(public_url: str, sign: Signer, message_id: int) -> str:
    return f"{public_url}{_OPEN_PATH}?requestId={sign('open', message_id)}"


def unsubscribe_url(public_url: str, sign: Signer, message_id: int) -> str:
    return f"{public_url}{_UNSUBSCRIBE_PATH}?t={sign('unsub', message_id)}"


def _rewrite_links(body: str, public_url: str, sign: Signer, message_id: int, skip: str) -> str:
    def repl(match: re.Match[str]) -> str:
        url = html.unescape(match.group(3))
        if url == skip or url.startswith(public_url + VERSION_PREFIX + "/"):
            return match.group(0)
        tracked = html.escape(click_url(public_url, sign, message_id, url), quote=True)
        return f"{match.group(1)}{match.group(2)}{tracked}{match.group(2)}"

    return _LINK.sub(repl, body)


def render(plan: CompiledPlan, **recipient: Unpack[RecipientArgs]) -> RenderedEmail:
    """Render the MIME message for one recipient; ``RenderError`` if a template fails at runtime."""
    public_url, unsub, names = recipient_names(plan, recipient)
    context = {**plan.template_globals, **names}
    message_id, email, name, sign = (
        recipient["message_id"],
        recipient["email"],
        recipient["name"],
        recipient["sign"],
    )
    subject, html_body, text_body = _bodies(plan, context)
    if html_body is not None:
        html_body = _html_extras(plan, html_body, public_url, sign, message_id, unsub)
    if text_body is not None and unsub and unsub not in text_body:
        text_body = f"{text_body}\n\n--\nUnsubscribe: {unsub}\n"
    headers = [
        f"From: {plan.from_header}",
        f"To: {address_header(name, email)}",
        f"Subject: {_header(subject)}",
        f"Date: {_date_header()}",
        f"X-EmailPlan-Message-Id: {message_id}",
    ]
    if unsub:
        headers.append(f"List-Unsubscribe: <{unsub}>")
    headers.append(plan.shared_headers[:-2])  # the plan's own headers, compiled once
    parts = []
    if text_body is not None:
        parts.append(("text/plain", text_body))
    if html_body is not None:
        parts.append(("text/html", html_body))
    mime = _mime(headers, parts)
    tags = {**plan.tags, "emailplan-message": str(message_id)}
    return RenderedEmail(
        raw=mime.encode("utf-8"),
        from_address=plan.from_address,
        to_address=ascii_address(email),
        tags=tags,
        configuration_set=plan.configuration_set,
    )


def _bodies(plan: CompiledPlan, context: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """Subject, HTML and text rendered; a template failing at runtime is a ``RenderError``."""
    try:
        subject = _run(plan.subject, context)
        html_body = _run(plan.html, context) if plan.html is not None else None
        text_body = _run(plan.text, context) if plan.text is not None else None
    except TemplateError as exc:
        raise RenderError(f"template: {exc}") from exc
    except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as exc:
        raise RenderError(f"template: {type(exc).__name__}: {exc}") from exc
    return subject, html_body, text_body


def _html_extras(
    plan: CompiledPlan, html_body: str, public_url: str, sign: Signer, message_id: int, unsub: str
) -> str:
    """The HTML body with tracked links, an unsubscribe footer (unless it links one) and the open pixel."""
    if plan.track_clicks:
        html_body = _rewrite_links(html_body, public_url, sign, message_id, unsub)
    if unsub and unsub not in html_body and html.escape(unsub) not in html_body:
        footer = f'<p style="font-size:12px;color:#888"><a href="{html.escape(unsub)}">Unsubscribe</a></p>'
        html_body = _insert_before_body_end(html_body, footer)
    if plan.track_opens:
        pixel = (
            f'<img src="{html.escape(open_url(public_url, sign, message_id))}" width="1" height="1" '
            'alt="" style="display:none;border:0">'
        )
        html_body = _insert_before_body_end(html_body, pixel)
    return html_body


def _mime(headers: list[str], parts: list[tuple[str, str]]) -> str:
    """The message text: one base64 part, or a multipart/alternative of text and HTML."""
    if len(parts) == 1:
        ctype, body = parts[0]
        headers = [*headers, f'Content-Type: {ctype}; charset="utf-8"', "Content-Transfer-Encoding: base64"]
        return "\r\n".join(headers) + "\r\n\r\n" + _b64_lines(body) + "\r\n"
    # "=_" never occurs in base64 text, so the boundary cannot collide with a body.
    boundary = "=_ep_" + secrets.token_hex(12)
    headers = [*headers, f'Content-Type: multipart/alternative; boundary="{boundary}"']
    chunks = ["\r\n".join(headers), ""]
    for ctype, body in parts:
        chunks += [
            f"--{boundary}",
            f'Content-Type: {ctype}; charset="utf-8"',
            "Content-Transfer-Encoding: base64",
            "",
            _b64_lines(body),
        ]
    chunks += [f"--{boundary}--", ""]
    return "\r\n".join(chunks)


def _insert_before_body_end(body: str, snippet: str) -> str:
    match = None
    for match in _BODY_END.finditer(body):  # noqa: B007 - we want the last one
        pass
    if match is None:
        return body + snippet
    return body[: match.start()] + snippet + body[match.start() :]
