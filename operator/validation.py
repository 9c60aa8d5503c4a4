"""Checks the CRD schema cannot express: templates render, the sender address parses.

Pure functions returning human-readable problems (empty list: valid), so a bad
plan gets one clear condition and Event listing everything wrong at once.
Templates are rendered in Jinja2's sandbox with ``StrictUndefined`` against the
first recipient, which catches typos like ``{{ nmae }}`` before a single email goes out.
"""

from __future__ import annotations

from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from emailplan.contract.addresses import check_mailbox
from emailplan.contract.headers import check_header
from emailplan.operator.planspec import Templates

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
