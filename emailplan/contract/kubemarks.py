"""Kubernetes schema markers on pydantic fields and models, like kubebuilder's ``+kubebuilder:...``.

The EmailPlan models (``contract.spec``) are the one definition of the resource;
``hack/gen_crd.py`` turns their JSON schema into the CRD. What JSON schema cannot
say (CEL rules with their messages, list types, an object's ``{}`` default, a
status field the operator clears with null) is attached here as
``json_schema_extra``, which pydantic copies into the schema and the generator keeps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from pydantic import GetJsonSchemaHandler, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from emailplan.contract.wire import Wire

Schema = dict[str, Any]


def cel(*rules: tuple[str, str]) -> Schema:
    """``x-kubernetes-validations``: (CEL rule, message shown by kubectl when it fails)."""
    return {"x-kubernetes-validations": [{"rule": rule, "message": message} for rule, message in rules]}


def matches(pattern: str, message: str) -> Schema:
    """A pattern checked as a CEL rule, so kubectl shows ``message`` and not the regular expression.

    Put the same ``pattern`` on the field for the model's own check: the generator drops the
    bare ``pattern`` where this rule states it.
    """
    return cel((f"self.matches(r'{pattern}')", message))


EMPTY_OBJECT_DEFAULT: Schema = {"default": {}}
"""An object the API server fills with ``{}`` so the defaults of its fields apply."""

NULLABLE: Schema = {"nullable": True}
"""A status field the operator may write as null (to clear it)."""

INT64: Schema = {"format": "int64"}

SET_LIST: Schema = {"x-kubernetes-list-type": "set"}


def merge(*parts: Schema) -> Schema:
    """Several markers on one field; validation rules add up."""
    out: Schema = {}
    for part in parts:
        for key, value in part.items():
            if key == "x-kubernetes-validations":
                out.setdefault(key, []).extend(value)
            else:
                out[key] = value
    return out


@dataclass(frozen=True)
class Rule:
    """A cross-field rule stated once: the API server checks ``cel``, the model checks ``holds``.

    kubebuilder's ``+kubebuilder:validation:XValidation`` with its Python twin, so a plan
    that reached the API server without the rule (an older CRD) is refused with the same words.
    """

    cel: str
    message: str
    holds: Callable[[Any], bool]


class Ruled(Wire):
    """A model with ``RULES``: checked on validation and written into its schema as CEL."""

    RULES: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _rules_hold(self) -> Self:
        broken = [rule.message for rule in self.RULES if not rule.holds(self)]
        if broken:
            raise ValueError("; ".join(broken))
        return self

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        if cls.RULES:
            target["x-kubernetes-validations"] = [{"rule": r.cel, "message": r.message} for r in cls.RULES]
        return schema
