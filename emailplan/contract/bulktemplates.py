"""Which templates a plan can send with SES SendBulkEmail (``ses.sendApi: bulk``).

In bulk mode SES renders the message from a template stored once per plan, filling it with
per-recipient replacement data; our Jinja2 never runs per recipient. SES templates substitute
``{{name}}`` values (Handlebars), so a plan template translates faithfully only when it is
literal text and plain ``{{ variable }}`` substitutions: no filters, no tests, no ``if`` or
``for`` blocks, no expressions, no macros. This module is the one statement of that rule: the
data plane's plan API refuses other templates (naming the field and line), and the sender's
translation (``sender.bulkmail``) reads the same pieces.

Kept in the contract because both sides need it: the operator can refuse such a plan before
it reaches the data plane, and the data plane must refuse it either way.
"""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import nodes
from jinja2.exceptions import TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

_ENV = SandboxedEnvironment()


@dataclass(frozen=True)
class Var:
    """A ``{{ name }}`` substitution."""

    name: str


Piece = str | Var


def pieces(source: str, field: str) -> tuple[list[Piece], list[str]]:
    """The template as literal text and variables, or the problems that keep it out of bulk mode."""
    try:
        tree = _ENV.parse(source)
    except TemplateSyntaxError as exc:
        return [], [f"{field}: line {exc.lineno}: {exc.message}"]
    out: list[Piece] = []
    problems: list[str] = []
    for node in tree.body:
        if not isinstance(node, nodes.Output):
            problems.append(_refused(field, node, f"a {{% {type(node).__name__.lower()} %}} block"))
            continue
        for child in node.nodes:
            if isinstance(child, nodes.TemplateData):
                if "{{" in child.data:
                    problems.append(_refused(field, child, "literal '{{' (SES would read it as a variable)"))
                out.append(child.data)
            elif isinstance(child, nodes.Name) and child.ctx == "load":
                out.append(Var(child.name))
            else:
                problems.append(_refused(field, child, f"an expression ({type(child).__name__})"))
    return out, problems


def _refused(field: str, node: nodes.Node, what: str) -> str:
    return (
        f"{field}: line {node.lineno}: ses.sendApi bulk allows only literal text and {{{{ variable }}}} "
        f"substitutions, not {what}; use sendApi raw for filters, conditions, loops and expressions"
    )


def bulk_template_problems(*, subject: str, html: str | None, text: str | None) -> list[str]:
    """Every reason the plan's templates cannot be sent as an SES template (empty: they can)."""
    problems: list[str] = []
    for field, source in (("subject", subject), ("html", html), ("text", text)):
        if source:
            problems += pieces(source, field)[1]
    return problems
