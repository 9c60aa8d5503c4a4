"""pydantic JSON schema → Kubernetes structural schema (what controller-gen does for Go types).

Small and generic: inline every ``$ref``, drop ``title``, turn ``X | None`` into
``X`` (absent is how Kubernetes says "not set"; a field marked ``nullable`` keeps
null), use OpenAPI v3.0's boolean ``exclusiveMinimum``, drop what a structural
schema may not hold (``propertyNames``, boolean ``additionalProperties``), and
drop a bare ``pattern`` where a CEL rule states it with a readable message.
The ``x-kubernetes-*`` markers (``emailplan.contract.kubemarks``) pass through.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

Schema = dict[str, Any]

_DROP = {"title", "$defs", "propertyNames"}
_FIRST = ("type", "description")  # readable YAML: these keys lead


def structural(model: type[BaseModel], *, keep_defaults: bool = True) -> Schema:
    """The model's schema with wire names (aliases), ready for ``openAPIV3Schema``."""
    raw = model.model_json_schema(by_alias=True)
    return _convert(raw, raw.get("$defs", {}), keep_defaults)


def _convert(node: Schema, defs: Schema, keep_defaults: bool) -> Schema:
    node = _inline(node, defs)
    out: Schema = {}
    for key, value in node.items():
        if key in _DROP or (key == "additionalProperties" and isinstance(value, bool)):
            continue
        if key == "default" and (value is None or not keep_defaults):
            continue
        if key == "properties":
            out[key] = {name: _convert(sub, defs, keep_defaults) for name, sub in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = _convert(value, defs, keep_defaults)
        else:
            out[key] = value
    for bound in ("exclusiveMinimum", "exclusiveMaximum"):
        if isinstance(out.get(bound), int | float) and not isinstance(out[bound], bool):
            out[bound.replace("exclusiveM", "m")] = out[bound]
            out[bound] = True
    if "pattern" in out and _cel_states_pattern(out):
        del out["pattern"]
    return {**{k: out[k] for k in _FIRST if k in out}, **{k: v for k, v in out.items() if k not in _FIRST}}


def _inline(node: Schema, defs: Schema) -> Schema:
    """Resolve ``$ref``, single ``allOf`` and ``anyOf [X, null]``; the node's own keys win."""
    if "$ref" in node:
        rest = {k: v for k, v in node.items() if k != "$ref"}
        return _inline(_merge(defs[node["$ref"].rsplit("/", 1)[-1]], rest), defs)
    for combinator in ("allOf", "anyOf"):
        options = [o for o in node.get(combinator, []) if o != {"type": "null"}]
        if combinator in node and len(options) == 1:
            rest = {k: v for k, v in node.items() if k != combinator}
            return _inline(_merge(options[0], rest), defs)
    return node


def _merge(base: Schema, over: Schema) -> Schema:
    merged = {**base, **over}
    rules = base.get("x-kubernetes-validations", []) + over.get("x-kubernetes-validations", [])
    if rules:
        merged["x-kubernetes-validations"] = rules
    return merged


def _cel_states_pattern(node: Schema) -> bool:
    wanted = f"self.matches(r'{node['pattern']}')"
    return any(rule.get("rule") == wanted for rule in node.get("x-kubernetes-validations", []))


def defaults(schema: Schema, path: str = "") -> dict[str, Any]:
    """Every default in a structural schema by dotted path (``rate.perSecond``): for tests and docs."""
    found: dict[str, Any] = {}
    if "default" in schema and path:
        found[path] = schema["default"]
    for name, sub in schema.get("properties", {}).items():
        found |= defaults(sub, f"{path}.{name}" if path else name)
    if "items" in schema:
        found |= defaults(schema["items"], f"{path}[]")
    return found


def words(text: str) -> str:
    """A description as one line (docstrings wrap)."""
    return re.sub(r"\s+", " ", text).strip()
