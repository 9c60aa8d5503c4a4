"""Checks the CRD schema cannot express: templates render, the sender address parses, time zones exist.

Pure functions returning human-readable problems (empty list: valid), so a bad
plan gets one clear condition and Event listing everything wrong at once.
Templates are rendered in Jinja2's sandbox with ``StrictUndefined`` against the
first recipient, which catches typos like ``{{ nmae }}`` before a single email goes out.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from emailplan.contract.addresses import check_mailbox
from emailplan.contract.bulktemplates import bulk_template_problems
from emailplan.contract.headers import check_header
from emailplan.contract.plans import SendApi
from emailplan.operator.planspec import PlanSpec, Templates

# Names the sender adds to every message's context besides the recipient's own variables.
BUILTIN_VARS = ("email", "name", "unsubscribe_url", "plan", "message_id")


def check_address(value: str, what: str = "from") -> list[str]:
    """``Name <addr@example.com>`` or a bare address, checked as a whole header value.

    The contract's one mailbox check: the data plane's plan API and rendering
    refuse exactly what the operator refuses here (CR/LF or control characters
    anywhere, more than one address, RFC 5321 lengths).
    """
    return check_mailbox(value, what)


def template_context(recipient: dict[str, Any] | None) -> dict[str, Any]:
    """What a template sees for ``recipient``: built-ins, then the recipient's vars on top."""
    recipient = recipient or {}
    context: dict[str, Any] = dict.fromkeys(BUILTIN_VARS, "")
    context["email"] = str(recipient.get("email") or "someone@example.com")
    context["name"] = str(recipient.get("name") or "")
    raw_vars = recipient.get("vars")
    if isinstance(raw_vars, dict):
        context.update({str(k): v for k, v in raw_vars.items()})
    for key, value in recipient.items():  # csv/jsonl columns other than email/name are variables too
        if key not in ("email", "name", "vars"):
            context.setdefault(str(key), value)
    return context


def check_templates(templates: Templates, recipient: dict[str, Any] | None) -> list[str]:
    """Render subject, html and text for ``recipient``; report syntax errors and unknown variables.

    Without a sample recipient (an S3 list the operator does not read) unknown
    variables cannot be judged, so only the syntax is checked.
    """
    problems: list[str] = check_header(templates.subject, "subject") if templates.subject else []
    if not (templates.html or templates.text):
        problems.append("the message has no body: set html, text or templateRef")
    strict = recipient is not None
    context = template_context(recipient)
    for field_name, source, html in (
        ("subject", templates.subject, False),
        ("html", templates.html, True),
        ("text", templates.text, False),
    ):
        if source is None:
            continue
        env = SandboxedEnvironment(
            autoescape=html, undefined=jinja2.StrictUndefined if strict else jinja2.Undefined
        )
        try:
            env.from_string(source).render(context)
        except jinja2.TemplateSyntaxError as exc:
            problems.append(f"{field_name}: template syntax error on line {exc.lineno}: {exc.message}")
        except jinja2.UndefinedError as exc:
            problems.append(f"{field_name}: {exc.message} for the first recipient")
        except jinja2.exceptions.SecurityError as exc:
            problems.append(f"{field_name}: not allowed in templates: {exc}")
        except Exception as exc:  # noqa: BLE001 - any render failure is the user's template
            problems.append(f"{field_name}: template does not render: {exc}")
    return problems


def check_time_zone(name: str, what: str = "schedule.window.timeZone") -> list[str]:
    """An IANA zone the operator's tz database knows (the schema cannot list them)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return [f"{what}: {name!r} is not an IANA time zone (e.g. Europe/Berlin, America/New_York, UTC)"]
    return []


def check_campaign(spec: PlanSpec, templates: Templates, recipient: dict[str, Any] | None) -> list[str]:
    """Variants and send window beyond what the model (and so the schema) checked.

    Each variant's message (its overrides on top of the plan's templates) must render
    like the plan's own; the time zone must exist; bulk sending needs templates SES can fill.
    The structural rules (names, counts, winner, rollout steps) are the model's
    (``contract.spec``): a plan breaking one never gets here.
    """
    problems: list[str] = []
    for i, variant in enumerate(spec.variants):
        merged = Templates(
            subject=variant.subject or templates.subject,
            html=variant.html if variant.html is not None else templates.html,
            text=variant.text if variant.text is not None else templates.text,
        )
        problems += [f"variants[{i}] ({variant.name}).{p}" for p in check_templates(merged, recipient)]
    if spec.window is not None:
        what = "schedule.window.fallbackTimeZone" if spec.window.per_recipient else "schedule.window.timeZone"
        problems += check_time_zone(spec.window.time_zone, what)
    if spec.ses.send_api is SendApi.BULK:  # SES fills the stored template, not our Jinja2
        problems += [
            f"ses.sendApi bulk: {p}"
            for p in bulk_template_problems(
                subject=templates.subject, html=templates.html, text=templates.text
            )
        ]
    return problems
