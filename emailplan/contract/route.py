"""What one HTTP endpoint of the data-plane API is: the type the route table is written in.

A :class:`Route` holds everything the three sides of an endpoint need: the API
registers its handler under ``method`` and ``path``, the OpenAPI document is
generated from its models and replies, and clients build their URLs with
:meth:`Route.url`. Writing the path once here is what keeps a client from
calling a path the server does not have.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

JSON = "application/json"
# Every API path but the probes starts with this; the keyed routes are served by a sub-app
# mounted here, whose one middleware checks the API key.
VERSION_PREFIX = "/v1"
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


class Method(StrEnum):
    GET = "GET"
    PUT = "PUT"
    POST = "POST"


class Tag(StrEnum):
    """The OpenAPI tag: which part of the API an endpoint belongs to."""

    TRACKING = "tracking"
    EVENTS = "events"
    STATS = "stats"
    SUPPRESSIONS = "suppressions"
    PLANS = "plans"
    OPS = "ops"


@dataclass(frozen=True, eq=False)
class Content:
    """One media type of a body: its schema is a model's (or several, any one of them), or raw."""

    media: str = JSON
    models: tuple[type[BaseModel], ...] = ()
    schema: Mapping[str, Any] = field(default_factory=dict)
    example: str | None = None


@dataclass(frozen=True, eq=False)
class Reply:
    """A documented body: an answer under its status code, or a request body."""

    description: str
    content: tuple[Content, ...] = ()
    headers: tuple[str, ...] = ()


def model_reply(
    model: type[BaseModel], description: str, *alternatives: type[BaseModel], media: str = JSON
) -> Reply:
    """A body that is ``model`` (or, with alternatives, any one of them), JSON unless ``media`` says."""
    return Reply(description, (Content(media, (model, *alternatives)),))


def raw_reply(description: str, media: str, schema: Mapping[str, Any], example: str | None = None) -> Reply:
    """A body with no model (an image, a page, plain text): its schema is written here."""
    return Reply(description, (Content(media, (), schema, example),))


@dataclass(frozen=True, eq=False)
class Route:
    """One endpoint. Routes compare by identity: each is a module constant of ``httpapi``."""

    method: Method
    path: str
    operation_id: str
    summary: str
    tag: Tag
    responses: Mapping[int, Reply]
    keyed: bool = False  # needs the API key (served by the admin sub-app under VERSION_PREFIX)
    path_params: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    body: Reply | None = None

    def __post_init__(self) -> None:
        named = set(self.placeholders)
        declared = set(_aliases(self.path_params))
        if named != declared:
            raise ValueError(
                f"{self.path}: placeholders {sorted(named)} but path parameters {sorted(declared)}"
            )
        if self.keyed and not self.path.startswith(VERSION_PREFIX + "/"):
            raise ValueError(f"{self.path}: a keyed route lives under {VERSION_PREFIX}/")

    @property
    def placeholders(self) -> tuple[str, ...]:
        return tuple(_PLACEHOLDER.findall(self.path))

    def url(self, query: Mapping[str, str | int] | None = None, **path: object) -> str:
        """The path with its placeholders filled (each value quoted), plus ``query`` if any.

        Every placeholder must be given and nothing else, so a client cannot build a
        path the route table does not hold.
        """
        if set(path) != set(self.placeholders):
            raise TypeError(f"{self.path} takes {list(self.placeholders)}, got {sorted(path)}")
        built = _PLACEHOLDER.sub(lambda m: urllib.parse.quote(str(path[m.group(1)]), safe=""), self.path)
        return f"{built}?{urllib.parse.urlencode(query)}" if query else built

    @property
    def relative_path(self) -> str:
        """The path as registered: relative to the admin sub-app for a keyed route."""
        return self.path.removeprefix(VERSION_PREFIX) if self.keyed else self.path


def _aliases(model: type[BaseModel] | None) -> list[str]:
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]
