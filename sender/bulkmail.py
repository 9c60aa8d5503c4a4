"""A plan as an SES template, and each recipient as one SendBulkEmail entry. Pure: no I/O.

In bulk mode (``ses.sendApi: bulk``) SES builds every message from a template stored once
per plan (CreateEmailTemplate) and the replacement data of each entry, so per recipient we
only compute what differs: the variables the templates use and the signed tracking URLs.
The translation keeps what raw mode promises a recipient:

* variables: ``{{ code }}`` becomes ``{{{t.code}}}`` (subject: ``s.``, HTML: ``h.``). Triple
  braces make SES (Handlebars) insert the value as given, and we give each part the value
  prepared as raw mode would: HTML-escaped for the HTML part (raw mode autoescapes), flattened
  to one line for the subject, as is for the text part. SES, not us, encodes the subject it
  builds, so a literal ``=?`` in a subject value gets an invisible WORD JOINER after its ``=``:
  the subject is then never a raw encoded word a reader would decode, and reads the same.
  Built-ins (``name``, ``email``, ``plan``, ``message_id``, ``unsubscribe_url``) resolve as in
  ``rendering.render``;
* click tracking: every literal ``href="https://…"`` becomes its own per-recipient variable
  (``h.click_N``) holding the signed redirect; links whose URL contains a variable are not
  tracked (raw mode tracks them, because it rewrites after rendering);
* the open pixel, the unsubscribe footer (HTML and text) and the List-Unsubscribe headers:
  per-recipient values (the pixel and footer in the template, the headers as
  ReplacementHeaders, the plan-wide ones once in the default content).

Template rules (what a plan can and cannot use here) are ``contract.bulktemplates``.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Unpack

import orjson

from emailplan.contract.bulktemplates import Piece, Var, pieces
from emailplan.contract.headers import one_line
from emailplan.contract.plans import SendApi
from emailplan.sender.rendering import (
    _LINK,
    CompiledPlan,
    RecipientArgs,
    RenderError,
    _insert_before_body_end,
    address_header,
    click_url,
    compile_plan,
    open_url,
    recipient_names,
)

# SendBulkEmail takes at most this many entries a call (SES v2 API reference).
MAX_ENTRIES = 50
BUILTINS = ("name", "email", "unsubscribe_url")  # raw mode puts these above the recipient's vars
ENCODED_WORD_BREAK = "=\u2060?"  # "=?" with a WORD JOINER between: never the start of an encoded word


@dataclass(frozen=True)
class BulkPlan:
    """A plan compiled for SendBulkEmail: the stored template and what each entry needs."""

    compiled: CompiledPlan  # from, reply-to, tags, configuration set, checked as in raw mode
    template_name: str  # content-addressed: a changed template gets a new name
    subject: str
    html: str | None
    text: str | None
    names: tuple[tuple[str, frozenset[str]], ...]  # (namespace, variables it uses)
    links: tuple[str, ...]  # tracked link targets, by their click_N index
    default_headers: tuple[tuple[str, str], ...]  # plan-wide headers, sent once per call

    def template_content(self) -> dict[str, str]:
        content = {"Subject": self.subject}
        if self.html is not None:
            content["Html"] = self.html
        if self.text is not None:
            content["Text"] = self.text
        return content


def uses_bulk(spec: Mapping[str, Any]) -> bool:
    """The plan asks for SendBulkEmail (``ses.sendApi: bulk``; raw is the default)."""
    ses = spec.get("ses") or {}
    return str(ses.get("sendApi") or SendApi.RAW) == SendApi.BULK


def _ses(parts: list[Piece], namespace: str) -> tuple[str, frozenset[str]]:
    out, used = [], set()
    for part in parts:
        if isinstance(part, Var):
            out.append(f"{{{{{{{namespace}.{part.name}}}}}}}")
            used.add(part.name)
        else:
            out.append(part)
    return "".join(out), frozenset(used)


def _parse(source: str, field: str) -> list[Piece]:
    parts, problems = pieces(source, field)
    if problems:
        raise RenderError("; ".join(problems))
    return parts


def compile_bulk(spec: Mapping[str, Any], plan_id: str) -> BulkPlan:
    """The SES template of a plan spec (camelCase, as stored); ``RenderError`` when it has none."""
    compiled = compile_plan(spec, plan_id)
    if spec.get("variants"):
        raise RenderError("variants: ses.sendApi bulk sends one stored template; A/B variants need raw")
    subject, subject_names = _ses(_parse(str(spec.get("subject") or ""), "subject"), "s")
    html_t: str | None = None
    text_t: str | None = None
    html_names: frozenset[str] = frozenset()
    text_names: frozenset[str] = frozenset()
    links: list[str] = []
    if spec.get("html"):
        html_t, html_names = _ses(_parse(str(spec["html"]), "html"), "h")
        if compiled.track_clicks:

            def tracked(match: Any) -> str:
                url = html.unescape(match.group(3))
                if "{{" in url:
                    return str(match.group(0))  # built from a variable: SES fills it in, untracked
                links.append(url)
                q = match.group(2)
                return f"{match.group(1)}{q}{{{{{{h.click_{len(links) - 1}}}}}}}{q}"

            html_t = _LINK.sub(tracked, html_t)
        if compiled.unsubscribe and "unsubscribe_url" not in html_names:
            html_t = _insert_before_body_end(
                html_t,
                '<p style="font-size:12px;color:#888"><a href="{{{h.unsubscribe_url}}}">Unsubscribe</a></p>',
            )
            html_names |= {"unsubscribe_url"}
        if compiled.track_opens:
            html_t = _insert_before_body_end(
                html_t,
                '<img src="{{{h.open_url}}}" width="1" height="1" alt="" style="display:none;border:0">',
            )
    if spec.get("text"):
        text_t, text_names = _ses(_parse(str(spec["text"]), "text"), "t")
        if compiled.unsubscribe and "unsubscribe_url" not in text_names:
            text_t = f"{text_t}\n\n--\nUnsubscribe: {{{{{{t.unsubscribe_url}}}}}}\n"
            text_names |= {"unsubscribe_url"}
    headers = [("X-EmailPlan-Plan-Id", compiled.plan_id)] if compiled.plan_id else []
    if compiled.unsubscribe:
        headers.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
    digest = hashlib.sha256(repr((subject, html_t, text_t)).encode()).hexdigest()[:16]
    return BulkPlan(
        compiled=compiled,
        template_name=f"emailplan-{compiled.plan_id or 'plan'}-{digest}",
        subject=subject,
        html=html_t,
        text=text_t,
        names=(("s", subject_names), ("h", html_names), ("t", text_names)),
        links=tuple(links),
        default_headers=tuple(headers),
    )


def _prepare(namespace: str, value: str) -> str:
    if namespace == "h":
        return html.escape(value, quote=True)
    if namespace == "s":
        return one_line(value).replace("=?", ENCODED_WORD_BREAK)
    return value


def entry(plan: BulkPlan, **recipient: Unpack[RecipientArgs]) -> dict[str, Any]:
    """One BulkEmailEntry (SES v2 wire shape) for one recipient."""
    c = plan.compiled
    public_url, unsub, context = recipient_names(c, recipient)
    message_id, email, name, sign = (
        recipient["message_id"],
        recipient["email"],
        recipient["name"],
        recipient["sign"],
    )
    data: dict[str, dict[str, str]] = {}
    for namespace, used in plan.names:
        values = {k: _prepare(namespace, str(context[k])) for k in used if k in context}
        data[namespace] = values
    if c.track_opens and plan.html is not None:
        data["h"]["open_url"] = html.escape(open_url(public_url, sign, message_id), quote=True)
    for i, url in enumerate(plan.links):
        data["h"][f"click_{i}"] = html.escape(click_url(public_url, sign, message_id, url), quote=True)
    headers = [{"Name": "X-EmailPlan-Message-Id", "Value": str(message_id)}]
    if unsub:
        headers.append({"Name": "List-Unsubscribe", "Value": f"<{unsub}>"})
    tags = {**c.tags, "emailplan-message": str(message_id)}
    return {
        "Destination": {"ToAddresses": [address_header(name, email)]},
        "ReplacementEmailContent": {
            "ReplacementTemplate": {"ReplacementTemplateData": orjson.dumps(data).decode()},
        },
        "ReplacementHeaders": headers,
        "ReplacementTags": [{"Name": k, "Value": v} for k, v in tags.items()],
    }


def request(plan: BulkPlan, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The SendBulkEmail request body for ``entries`` (at most ``MAX_ENTRIES``)."""
    c = plan.compiled
    body: dict[str, Any] = {
        "FromEmailAddress": c.from_header,
        "DefaultContent": {
            "Template": {
                "TemplateName": plan.template_name,
                "TemplateData": "{}",
                "Headers": [{"Name": k, "Value": v} for k, v in plan.default_headers],
            }
        },
        "BulkEmailEntries": entries,
        "DefaultEmailTags": [{"Name": k, "Value": v} for k, v in c.tags.items()],
    }
    if c.reply_to:
        body["ReplyToAddresses"] = list(c.reply_to)
    if c.configuration_set:
        body["ConfigurationSetName"] = c.configuration_set
    return body
